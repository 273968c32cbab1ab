package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
)

// keySet holds the keys that clients may use (-client-keys), as SHA-256
// digests: a check compares the digest of the client's key with every one
// of them in constant time, so that neither the time it takes nor an
// early exit says how much of a key, or which key, matched. A nil keySet
// takes every request, with or without a key.
type keySet struct {
	digests [][sha256.Size]byte
}

// loadClientKeys reads a key file: one key per line; blank lines and
// lines that begin with # are skipped, and so is the white space around
// a key. A key is printable ASCII without spaces, as the SDKs send it in
// a header. A file without a key is an error: it would lock every client
// out.
func loadClientKeys(path string) (*keySet, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseClientKeys(data)
}

func parseClientKeys(data []byte) (*keySet, error) {
	ks := &keySet{}
	seen := map[[sha256.Size]byte]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !validKey(line) {
			// The line is not quoted: it may be a key with a typo.
			return nil, fmt.Errorf("line %d: a key is printable ASCII without spaces", n)
		}
		d := sha256.Sum256([]byte(line))
		if !seen[d] {
			seen[d] = true
			ks.digests = append(ks.digests, d)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(ks.digests) == 0 {
		return nil, errors.New("no key: one key a line, # for comments")
	}
	return ks, nil
}

// validKey reports a key of printable ASCII without spaces.
func validKey(k string) bool {
	for _, c := range []byte(k) {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return k != ""
}

// check returns the API's 401 for a request without one of the keys, nil
// for one with, or for every request when ks is nil. The key is
// x-api-key, else Authorization: Bearer (what the SDKs of API version
// 2026-10-21 and OpenAI's send), as the API reads them.
func (ks *keySet) check(r *http.Request) *apiError {
	if ks == nil {
		return nil
	}
	key, e := clientKey(r)
	if e != nil {
		return e
	}
	if !ks.has(key) {
		return &apiError{http.StatusUnauthorized, errAuthentication, "invalid x-api-key"}
	}
	return nil
}

// has reports whether key is one of the set's, comparing its digest with
// every digest, without an early exit.
func (ks *keySet) has(key string) bool {
	d := sha256.Sum256([]byte(key))
	found := 0
	for i := range ks.digests {
		found |= subtle.ConstantTimeCompare(d[:], ks.digests[i][:])
	}
	return found == 1
}
