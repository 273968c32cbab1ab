package main

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDescribeModel(t *testing.T) {
	for _, tt := range []struct {
		id, name, created string
		line              any
	}{
		{"claude-sonnet-4-5", "Claude Sonnet 4.5", unknownRelease, "sonnet"},
		{"claude-3-5-haiku-20241022", "Claude 3.5 Haiku", "2024-10-22T00:00:00Z", "haiku"},
		{"claude-opus-4-1-20250805", "Claude Opus 4.1", "2025-08-05T00:00:00Z", "opus"},
		{"claude-3-opus-20240229", "Claude 3 Opus", "2024-02-29T00:00:00Z", "opus"},
		{"sonnet", "Sonnet", unknownRelease, "sonnet"},
		{"my-model", "My Model", unknownRelease, nil},
	} {
		m := describeModel(tt.id)
		require.Equal(t, "model", m.Type)
		require.Equal(t, tt.id, m.ID)
		require.Equal(t, tt.name, m.DisplayName, tt.id)
		require.Equal(t, tt.created, m.CreatedAt, tt.id)
		require.Equal(t, "active", m.Lifecycle)
		if tt.line == nil {
			require.Nil(t, m.Line, tt.id)
		} else {
			require.Equal(t, tt.line, *m.Line, tt.id)
		}
	}
	c := newModelCatalog("", []string{"a", "", "b", "a"})
	require.Len(t, c.models, 2, "no pool model named, each model once")
}

// getModels decodes GET path's answer.
func getModels[T any](t *testing.T, ts *testServer, path string) (int, T) {
	t.Helper()
	resp, body := ts.do(t, http.MethodGet, path, "", "Anthropic-Version", testAPIVersion)
	var v T
	if resp.StatusCode == http.StatusOK {
		require.NoError(t, json.Unmarshal([]byte(body), &v), body)
	}
	return resp.StatusCode, v
}

// TestModels: GET /v1/models lists the pool's model and -models in the
// API's shape, paged as the API pages; GET /v1/models/{id} one of them,
// and the API's 404 for any other.
func TestModels(t *testing.T) {
	ts := newTestServer(t)
	ts.api.models = newModelCatalog("claude-sonnet-4-5", []string{"claude-haiku-4-5", "claude-opus-4-1-20250805", "claude-sonnet-4-5"})

	resp, body := ts.do(t, http.MethodGet, "/v1/models", "", "Anthropic-Version", testAPIVersion)
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var raw map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &raw))
	require.Equal(t, false, raw["has_more"])
	require.Equal(t, "claude-sonnet-4-5", raw["first_id"])
	require.Equal(t, "claude-opus-4-1-20250805", raw["last_id"])
	data := raw["data"].([]any)
	require.Len(t, data, 3)
	first := data[0].(map[string]any)
	require.Equal(t, map[string]any{
		"type": "model", "id": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5", "created_at": "1970-01-01T00:00:00Z",
		"capabilities": nil, "deprecated_at": nil, "lifecycle": "active", "line": "sonnet",
		"max_input_tokens": nil, "max_tokens": nil, "retires_at": nil,
	}, first)

	ids := func(p modelPage) []string {
		var out []string
		for _, m := range p.Data {
			out = append(out, m.ID)
		}
		return out
	}
	for _, tt := range []struct {
		query       string
		want        []string
		more        bool
		first, last string
	}{
		{"?limit=2", []string{"claude-sonnet-4-5", "claude-haiku-4-5"}, true, "claude-sonnet-4-5", "claude-haiku-4-5"},
		{"?limit=2&after_id=claude-haiku-4-5", []string{"claude-opus-4-1-20250805"}, false, "claude-opus-4-1-20250805", "claude-opus-4-1-20250805"},
		{"?limit=1&after_id=claude-sonnet-4-5", []string{"claude-haiku-4-5"}, true, "claude-haiku-4-5", "claude-haiku-4-5"},
		{"?limit=1&before_id=claude-opus-4-1-20250805", []string{"claude-haiku-4-5"}, true, "claude-haiku-4-5", "claude-haiku-4-5"},
		{"?before_id=claude-haiku-4-5", []string{"claude-sonnet-4-5"}, false, "claude-sonnet-4-5", "claude-sonnet-4-5"},
		{"?after_id=claude-opus-4-1-20250805", nil, false, "", ""},
		{"?lifecycle=active", []string{"claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1-20250805"}, false, "claude-sonnet-4-5", "claude-opus-4-1-20250805"},
		{"?lifecycle=retired", nil, false, "", ""},
	} {
		code, p := getModels[modelPage](t, ts, "/v1/models"+tt.query)
		require.Equal(t, http.StatusOK, code, tt.query)
		require.Equal(t, tt.want, ids(p), tt.query)
		require.Equal(t, tt.more, p.HasMore, tt.query)
		if tt.first == "" {
			require.Nil(t, p.FirstID, tt.query)
			require.Nil(t, p.LastID, tt.query)
			require.NotNil(t, p.Data, "data is a list, empty: %s", tt.query)
		} else {
			require.Equal(t, tt.first, *p.FirstID, tt.query)
			require.Equal(t, tt.last, *p.LastID, tt.query)
		}
	}
	for _, q := range []string{"?limit=0", "?limit=1001", "?limit=x", "?after_id=nope", "?after_id=a&before_id=b", "?lifecycle=old"} {
		resp, body := ts.do(t, http.MethodGet, "/v1/models"+q, "", "Anthropic-Version", testAPIVersion)
		requireAPIError(t, resp, body, http.StatusBadRequest, errInvalidRequest)
	}

	code, m := getModels[modelInfo](t, ts, "/v1/models/claude-haiku-4-5")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "Claude Haiku 4.5", m.DisplayName)
	resp, body = ts.do(t, http.MethodGet, "/v1/models/claude-nope", "", "Anthropic-Version", testAPIVersion)
	require.Equal(t, "model: claude-nope", requireAPIError(t, resp, body, http.StatusNotFound, errNotFound))

	// A server whose pool has no model named lists none.
	ts.api.models = nil
	code, p := getModels[modelPage](t, ts, "/v1/models")
	require.Equal(t, http.StatusOK, code)
	require.Empty(t, p.Data)
	resp, body = ts.do(t, http.MethodGet, "/v1/models/claude-sonnet-4-5", "", "Anthropic-Version", testAPIVersion)
	requireAPIError(t, resp, body, http.StatusNotFound, errNotFound)
}

func TestModelsOption(t *testing.T) {
	o, err := parseOptions([]string{"-model", "claude-sonnet-4-5"}, envOf(map[string]string{"CLAUDEPOOL_MODELS": " claude-haiku-4-5, ,claude-opus-4-1 "}), io.Discard)
	require.NoError(t, err)
	require.Equal(t, []string{"claude-haiku-4-5", "claude-opus-4-1"}, o.models)
}
