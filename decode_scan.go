package claudepool

import "strings"

// scanHeader reads the type, subtype and session_id of a line without
// decoding the rest, which encoding/json would otherwise scan twice more. It
// does not validate the line. ok is true when the values are those
// json.Unmarshal would find if the line is valid JSON; on anything unusual
// (escapes or non-ASCII text in a header key or value, a key that only
// matches case-insensitively, a repeated or non-string header value) it
// gives up and the caller decodes the header with encoding/json.
func scanHeader(line []byte) (h lineHeader, ok bool) {
	var seen [3]bool
	i := jsonSkipSpace(line, 0)
	if i >= len(line) || line[i] != '{' {
		return h, false
	}
	i = jsonSkipSpace(line, i+1)
	if i < len(line) && line[i] == '}' {
		return h, jsonSkipSpace(line, i+1) == len(line)
	}
	for {
		key, next, ok := jsonPlainString(line, i)
		if !ok {
			return h, false
		}
		i = jsonSkipSpace(line, next)
		if i >= len(line) || line[i] != ':' {
			return h, false
		}
		i = jsonSkipSpace(line, i+1)
		field := -1
		switch string(key) {
		case "type":
			field = 0
		case "subtype":
			field = 1
		case "session_id":
			field = 2
		default:
			if foldsToHeaderKey(key) {
				return h, false
			}
		}
		if field >= 0 {
			if seen[field] {
				return h, false
			}
			seen[field] = true
			switch {
			case i < len(line) && line[i] == '"':
				v, next, ok := jsonPlainString(line, i)
				if !ok {
					return h, false
				}
				switch field {
				case 0:
					h.Type = internType(v)
				case 1:
					h.Subtype = internSubtype(v)
				case 2:
					h.SessionID = string(v)
				}
				i = next
			case jsonHasPrefixAt(line, i, "null"):
				i += len("null")
			default:
				return h, false
			}
		} else {
			i = jsonSkipValue(line, i)
		}
		i = jsonSkipSpace(line, i)
		if i >= len(line) {
			return h, false
		}
		switch line[i] {
		case ',':
			i = jsonSkipSpace(line, i+1)
		case '}':
			return h, jsonSkipSpace(line, i+1) == len(line)
		default:
			return h, false
		}
	}
}

// topLevelValue returns the raw value of key in the JSON object line, which
// must be valid. ok is false when encoding/json might pick a different value:
// when any key needs unquoting, folds to key without equalling it, or
// repeats it.
func topLevelValue(line []byte, key string) (raw []byte, ok bool) {
	i := jsonSkipSpace(line, 0)
	if i >= len(line) || line[i] != '{' {
		return nil, false
	}
	i = jsonSkipSpace(line, i+1)
	for i < len(line) && line[i] != '}' {
		k, next, ok := jsonPlainString(line, i)
		if !ok {
			return nil, false
		}
		i = jsonSkipSpace(line, next)
		if i >= len(line) || line[i] != ':' {
			return nil, false
		}
		i = jsonSkipSpace(line, i+1)
		end := jsonSkipValue(line, i)
		switch {
		case string(k) == key:
			if raw != nil {
				return nil, false
			}
			raw = line[i:end]
		case strings.EqualFold(string(k), key):
			return nil, false
		}
		i = jsonSkipSpace(line, end)
		if i < len(line) && line[i] == ',' {
			i = jsonSkipSpace(line, i+1)
		}
	}
	return raw, raw != nil
}

// jsonPlainString returns the contents of the JSON string starting at line[i]
// when it needs no unquoting: no escapes, control or non-ASCII bytes.
func jsonPlainString(line []byte, i int) (s []byte, next int, ok bool) {
	if i >= len(line) || line[i] != '"' {
		return nil, i, false
	}
	for j := i + 1; j < len(line); j++ {
		switch c := line[j]; {
		case c == '"':
			return line[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return nil, j, false
		}
	}
	return nil, len(line), false
}

// jsonSkipValue returns the index just past the JSON value starting at line[i].
// On invalid JSON the index is meaningless, which is fine: every line
// scanHeader reads is validated afterwards.
func jsonSkipValue(line []byte, i int) int {
	depth := 0
	for i < len(line) {
		switch line[i] {
		case '"':
			i = jsonSkipString(line, i)
		case '{', '[':
			depth++
			i++
		case '}', ']':
			if depth == 0 {
				return i
			}
			depth--
			i++
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return i
			}
			i++
		default: // inside a number or a literal
			i++
			continue
		}
		if depth == 0 {
			return i // just past a string or a closed container
		}
	}
	return len(line)
}

// jsonSkipString returns the index just past the JSON string starting at
// line[i].
func jsonSkipString(line []byte, i int) int {
	for i++; i < len(line); i++ {
		switch line[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(line)
}

// jsonSkipSpace returns the index of the first non-space byte from i on.
func jsonSkipSpace(line []byte, i int) int {
	for i < len(line) {
		switch line[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// jsonHasPrefixAt reports whether line[i:] starts with prefix.
func jsonHasPrefixAt(line []byte, i int, prefix string) bool {
	return len(line)-i >= len(prefix) && string(line[i:i+len(prefix)]) == prefix
}

// foldsToHeaderKey reports a key that encoding/json would take for one of
// the header keys, since it matches keys case-insensitively.
func foldsToHeaderKey(key []byte) bool {
	k := string(key)
	return strings.EqualFold(k, "type") || strings.EqualFold(k, "subtype") || strings.EqualFold(k, "session_id")
}

// internType returns the known line types without allocating.
func internType(v []byte) string {
	switch string(v) {
	case "system":
		return "system"
	case "assistant":
		return "assistant"
	case "user":
		return "user"
	case "stream_event":
		return "stream_event"
	case "result":
		return "result"
	case "control_response":
		return "control_response"
	case "control_request":
		return "control_request"
	case "conversation_reset":
		return "conversation_reset"
	}
	return string(v)
}

// internSubtype returns the common subtypes without allocating.
func internSubtype(v []byte) string {
	switch string(v) {
	case "init":
		return "init"
	case "status":
		return "status"
	case "api_retry":
		return "api_retry"
	case "success":
		return "success"
	}
	return string(v)
}
