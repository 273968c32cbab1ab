package claudepool

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// cliBodyExample is a body as the CLI sends it, member for member.
const cliBodyExample = `{"model":"claude-opus-5-5","messages":[{"role":"user","content":[{"type":"text","text":"hello","cache_control":{"type":"ephemeral"}}]},{"role":"system","content":[],"output_config":{"effort":"medium"}}],"system":[{"type":"text","text":"x-anthropic-billing-header: cc_version=2.1.330.115; cc_entrypoint=sdk-cli;"},{"type":"text","text":"You are a Claude agent, built on Anthropic's Claude Agent SDK.","cache_control":{"type":"ephemeral"}}],"tools":[],"metadata":{"user_id":"{\"device_id\":\"db4e\",\"account_uuid\":\"\",\"session_id\":\"f50c\"}"},"max_tokens":128000,"thinking":{"type":"adaptive","display":"updates"},"context_management":{"edits":[{"type":"clear_thinking_20251015","keep":"all"}]},"output_config":{"effort":"medium"},"stream":true}`

func TestJSONObjRoundTrip(t *testing.T) {
	compact := []string{
		`{}`,
		`{"a":1}`,
		cliBodyExample,
		// Keys and values keep their escapes, HTML characters and all.
		`{"\u0041":"\u00e9","<b>&":"</script>","\/":"\ud83d\ude00","é":"\n\t\\\""}`,
		// Duplicate keys stay, in their order.
		`{"a":1,"b":2,"a":3}`,
		`{"n":-0.5e+10,"big":123456789012345678901234567890,"t":true,"f":false,"z":null}`,
		`{"deep":{"a":[{"b":[[],{}]}]},"s":"{\"not\":\"an object\"}"}`,
		"{\"raw\xffkey\":\"raw\xfevalue\"}", // bytes that are not UTF-8 pass as they came
	}
	for _, in := range compact {
		obj, err := parseObject([]byte(in))
		require.NoError(t, err, in)
		require.Equal(t, in, string(obj.bytes()))
	}

	// White space between members goes; inside a value it stays.
	obj, err := parseObject([]byte(" {\n  \"a\" : [1, 2],\n\t\"b\":{ \"c\" : 3 }\n}\n"))
	require.NoError(t, err)
	require.Equal(t, `{"a":[1, 2],"b":{ "c" : 3 }}`, string(obj.bytes()))
	require.Equal(t, `[1, 2]`, string(obj.get("a")))
}

func TestJSONObjSetDel(t *testing.T) {
	obj, err := parseObject([]byte(`{"m":"x","\u006b":1,"t":{"type":"adaptive"},"s":true}`))
	require.NoError(t, err)

	require.Equal(t, `1`, string(obj.get("k")), "get finds a key by its decoded name")
	require.Nil(t, obj.get("absent"))

	// set replaces in place and keeps how the key was written.
	obj.set("k", json.RawMessage(`2`))
	require.Equal(t, `{"m":"x","\u006b":2,"t":{"type":"adaptive"},"s":true}`, string(obj.bytes()))

	// A new member goes last.
	obj.set("temperature", json.RawMessage(`0.5`))
	require.Equal(t, `{"m":"x","\u006b":2,"t":{"type":"adaptive"},"s":true,"temperature":0.5}`, string(obj.bytes()))

	obj.del("t")
	require.Equal(t, `{"m":"x","\u006b":2,"s":true,"temperature":0.5}`, string(obj.bytes()))
	obj.del("absent")
	obj.del("m")
	require.Equal(t, `{"\u006b":2,"s":true,"temperature":0.5}`, string(obj.bytes()))

	// A removed key set again comes back at the end.
	obj.set("m", json.RawMessage(`"y"`))
	require.Equal(t, `{"\u006b":2,"s":true,"temperature":0.5,"m":"y"}`, string(obj.bytes()))

	// Keys of new members are written as JSON strings.
	obj.set("q\"<", json.RawMessage(`null`))
	require.True(t, json.Valid(obj.bytes()), "%s", obj.bytes())
	require.Equal(t, `null`, string(obj.get("q\"<")))

	for _, k := range []string{"k", "s", "temperature", "m", "q\"<"} {
		obj.del(k)
	}
	require.Equal(t, `{}`, string(obj.bytes()))
	require.Equal(t, `{}`, string(jsonObject(nil).bytes()))
}

func TestJSONObjMalformed(t *testing.T) {
	for _, in := range []string{
		``,
		` `,
		`null`,
		`[]`,
		`[{"a":1}]`,
		`"a"`,
		`1`,
		`{`,
		`}`,
		`{"a"}`,
		`{"a":}`,
		`{"a" 1}`,
		`{"a":1,}`,
		`{,"a":1}`,
		`{"a":1 "b":2}`,
		`{1:2}`,
		`{a:1}`,
		`{'a':1}`,
		`{"a":01}`,
		`{"a":tru}`,
		`{"a":"\x"}`,
		`{"a":[1,}`,
		`{"a":{"b":1}`,
		"{\"a\":\"line\nbreak\"}",
		// Nothing may follow the object.
		`{"a":1}x`,
		`{"a":1} x`,
		`{"a":1}}`,
		`{"a":1}]`,
		`{"a":1}{}`,
		`{"a":1} 2`,
		`{"a":1},`,
	} {
		_, err := parseObject([]byte(in))
		require.Error(t, err, "%q", in)
	}
}

// FuzzParseObject checks that any valid JSON object parses and comes back
// compact with its members' bytes unchanged, that anything else is refused,
// and that nothing panics.
func FuzzParseObject(f *testing.F) {
	for _, s := range []string{
		`{}`,
		`{"a":1}`,
		` { "a" : [ 1 , 2 ] , "b" : { } } `,
		`{"\u0041<>&":"\ud83d"}`,
		`{"a":1,"a":2}`,
		`{"a":1}x`,
		`{"a":1,}`,
		`[1]`,
		`{"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"max_tokens":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		obj, err := parseObject(data)
		trimmed := bytes.TrimLeft(data, " \t\r\n")
		isObject := json.Valid(data) && len(trimmed) > 0 && trimmed[0] == '{'
		if !isObject {
			if err == nil {
				t.Fatalf("parsed %q, which is not a JSON object", data)
			}
			return
		}
		if err != nil {
			t.Fatalf("valid object %q: %v", data, err)
		}
		var want bytes.Buffer
		if err := json.Compact(&want, data); err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		if err := json.Compact(&got, obj.bytes()); err != nil {
			t.Fatalf("written back %q, which is not JSON: %v", obj.bytes(), err)
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Fatalf("round trip of %q:\n got %q\nwant %q", data, got.Bytes(), want.Bytes())
		}
		// A compact object comes back byte for byte.
		cobj, err := parseObject(want.Bytes())
		if err != nil {
			t.Fatalf("compact %q: %v", want.Bytes(), err)
		}
		if out := cobj.bytes(); !bytes.Equal(out, want.Bytes()) {
			t.Fatalf("compact round trip:\n got %q\nwant %q", out, want.Bytes())
		}
		// Edits keep the object valid.
		if len(cobj) > 0 {
			cobj.del(cobj[0].key)
		}
		cobj.set("max_tokens", json.RawMessage(`1`))
		if out := cobj.bytes(); !json.Valid(out) || string(cobj.get("max_tokens")) != "1" {
			t.Fatalf("after edits: %q", out)
		}
	})
}
