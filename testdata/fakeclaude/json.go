package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"
)

// object is a JSON object that keeps its key order, so the fake can print
// keys in the same varying order as the real CLI (type is not always first).
type object []field

type field struct {
	key   string
	value any
}

// obj builds an object from alternating keys and values.
func obj(kv ...any) object {
	if len(kv)%2 != 0 {
		panic("fakeclaude: obj needs key/value pairs")
	}
	o := make(object, 0, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		o = append(o, field{kv[i].(string), kv[i+1]})
	}
	return o
}

// MarshalJSON writes the fields in order.
func (o object) MarshalJSON() ([]byte, error) {
	return encode(o)
}

// encode marshals v without HTML escaping, as JavaScript's JSON.stringify
// does ("<synthetic>" stays as is). Objects and lists are written here
// rather than through json.Marshaler, which would re-scan a multi-megabyte
// reply once per nesting level.
func encode(v any) ([]byte, error) {
	var b bytes.Buffer
	err := appendJSON(&b, v)
	return b.Bytes(), err
}

func appendJSON(b *bytes.Buffer, v any) error {
	switch v := v.(type) {
	case object:
		b.WriteByte('{')
		for i, f := range v {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := appendJSON(b, f.key); err != nil {
				return err
			}
			b.WriteByte(':')
			if err := appendJSON(b, f.value); err != nil {
				return err
			}
		}
		b.WriteByte('}')
		return nil
	case []any:
		b.WriteByte('[')
		for i, e := range v {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := appendJSON(b, e); err != nil {
				return err
			}
		}
		b.WriteByte(']')
		return nil
	}
	e := json.NewEncoder(b)
	e.SetEscapeHTML(false)
	if err := e.Encode(v); err != nil {
		return err
	}
	b.Truncate(b.Len() - 1) // the newline Encode adds
	return nil
}

// output writes whole lines to stdout. The mutex keeps lines from the turn
// and from control responses from interleaving; stdout is unbuffered, so a
// reader sees each line as soon as it is written.
type output struct {
	mu sync.Mutex
	f  *os.File
}

// line prints v as one JSON line. Write errors (a closed stdout) are ignored:
// the fake keeps behaving as configured.
func (o *output) line(v any) {
	b, err := encode(v)
	if err != nil {
		panic(err)
	}
	o.write(append(b, '\n'))
}

// raw prints s followed by a newline.
func (o *output) raw(s string) {
	o.write([]byte(s + "\n"))
}

func (o *output) write(b []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	_, _ = o.f.Write(b)
}

// close closes stdout.
func (o *output) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	_ = o.f.Close()
}

// newUUID returns a random version 4 UUID string.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// timestamp formats t like the real CLI: 2026-11-23T10:23:13.510Z.
func timestamp(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}
