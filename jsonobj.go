package claudepool

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// jsonObject is a JSON object whose members keep their order and their
// bytes: a body edited through it and written back differs from the
// original only where a member was set or removed.
type jsonObject []jsonMember

type jsonMember struct {
	key   string
	raw   []byte // the key as the input wrote it, quotes included; nil for a member set
	value json.RawMessage
}

// parseObject splits a JSON object into its members.
func parseObject(data []byte) (jsonObject, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("not a JSON object")
	}
	var obj jsonObject
	for dec.More() {
		from := dec.InputOffset()
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("object key %v is not a string", tok)
		}
		// Only white space and a comma come before the key's quote.
		raw := data[from:dec.InputOffset()]
		raw = bytes.Clone(raw[bytes.IndexByte(raw, '"'):])
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		obj = append(obj, jsonMember{key: key, raw: raw, value: v})
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON object")
	}
	return obj, nil
}

// get returns the value of key, nil when absent.
func (o jsonObject) get(key string) json.RawMessage {
	for _, m := range o {
		if m.key == key {
			return m.value
		}
	}
	return nil
}

// set replaces the value of key, or appends the member when absent.
func (o *jsonObject) set(key string, value json.RawMessage) {
	for i, m := range *o {
		if m.key == key {
			(*o)[i].value = value
			return
		}
	}
	*o = append(*o, jsonMember{key: key, value: value})
}

// del removes key.
func (o *jsonObject) del(key string) {
	for i, m := range *o {
		if m.key == key {
			*o = append((*o)[:i], (*o)[i+1:]...)
			return
		}
	}
}

// bytes writes the object back, compact where it was compact.
func (o jsonObject) bytes() []byte {
	n := 2
	for _, m := range o {
		n += len(m.raw) + len(m.key) + len(m.value) + 4
	}
	b := make([]byte, 0, n)
	b = append(b, '{')
	for i, m := range o {
		if i > 0 {
			b = append(b, ',')
		}
		if m.raw != nil {
			b = append(b, m.raw...)
		} else {
			k, _ := json.Marshal(m.key)
			b = append(b, k...)
		}
		b = append(b, ':')
		b = append(b, m.value...)
	}
	return append(b, '}')
}
