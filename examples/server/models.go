package main

import (
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// modelInfo is a model as the Models API describes it. The server knows a
// model's id alone: the rest is derived from it, or null where the API
// would say what only it knows (capabilities, limits).
type modelInfo struct {
	Type           string  `json:"type"` // "model"
	ID             string  `json:"id"`
	DisplayName    string  `json:"display_name"`
	CreatedAt      string  `json:"created_at"`
	Capabilities   any     `json:"capabilities"` // null
	DeprecatedAt   *string `json:"deprecated_at"`
	Lifecycle      string  `json:"lifecycle"` // "active"
	Line           *string `json:"line"`      // haiku, sonnet, opus, ... from the id; else null
	MaxInputTokens *int    `json:"max_input_tokens"`
	MaxTokens      *int    `json:"max_tokens"`
	RetiresAt      *string `json:"retires_at"`
}

// modelPage is the body of GET /v1/models.
type modelPage struct {
	Data    []modelInfo `json:"data"`
	HasMore bool        `json:"has_more"`
	FirstID *string     `json:"first_id"`
	LastID  *string     `json:"last_id"`
}

// modelCatalog lists the models of the server's pool: its -model, then
// its -models (Config.Models), each once, in that order. A request may
// name another model (the pool switches its process to it); the catalog
// lists those the pool is set up for.
type modelCatalog struct {
	models []modelInfo
}

// newModelCatalog returns the catalog of a pool whose model is model ("":
// the CLI's default, which the server does not know by name) and whose
// further models are models.
func newModelCatalog(model string, models []string) *modelCatalog {
	c := &modelCatalog{}
	for _, id := range append([]string{model}, models...) {
		if id == "" || slices.ContainsFunc(c.models, func(m modelInfo) bool { return m.ID == id }) {
			continue
		}
		c.models = append(c.models, describeModel(id))
	}
	return c
}

// lookup returns the model with id, and whether there is one.
func (c *modelCatalog) lookup(id string) (modelInfo, bool) {
	if c == nil {
		return modelInfo{}, false
	}
	i := slices.IndexFunc(c.models, func(m modelInfo) bool { return m.ID == id })
	if i < 0 {
		return modelInfo{}, false
	}
	return c.models[i], true
}

// The default and the limits of a page's limit, as in the API.
const (
	defaultModelPage = 20
	maxModelPage     = 1000
)

// listModels is GET /v1/models: a page of the catalog, as the API pages
// it: limit (1 to 1000, 20 by default), after_id or before_id (an id of
// the catalog), and lifecycle (all the server's models are active).
func (s *server) listModels(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := defaultModelPage
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxModelPage {
			writeAPIError(w, r, badRequest("limit: must be an integer from 1 to 1000, got "+strconv.Quote(v)))
			return
		}
		limit = n
	}
	var models []modelInfo
	if s.models != nil {
		models = s.models.models
	}
	switch v := q.Get("lifecycle"); v {
	case "", "active":
	case "deprecated", "retired":
		models = nil
	default:
		writeAPIError(w, r, badRequest("lifecycle: must be \"active\", \"deprecated\" or \"retired\", got "+strconv.Quote(v)))
		return
	}
	after, before := q.Get("after_id"), q.Get("before_id")
	if after != "" && before != "" {
		writeAPIError(w, r, badRequest("after_id and before_id: set one or the other, not both"))
		return
	}
	// The page's bounds in models, [lo, hi), and whether more are
	// beyond them in the direction of the request.
	lo, hi := 0, len(models)
	for _, cursor := range []struct {
		name, id string
	}{{"after_id", after}, {"before_id", before}} {
		if cursor.id == "" {
			continue
		}
		i := slices.IndexFunc(models, func(m modelInfo) bool { return m.ID == cursor.id })
		if i < 0 {
			writeAPIError(w, r, badRequest(cursor.name+": no model "+strconv.Quote(cursor.id)+" in this server's list"))
			return
		}
		if cursor.name == "after_id" {
			lo = i + 1
		} else {
			hi = i
		}
	}
	more := hi-lo > limit
	if more && before != "" {
		lo = hi - limit // the page just before the cursor
	} else if more {
		hi = lo + limit
	}
	page := modelPage{Data: slices.Clone(models[lo:hi]), HasMore: more}
	if page.Data == nil {
		page.Data = []modelInfo{}
	}
	if n := len(page.Data); n > 0 {
		page.FirstID, page.LastID = &page.Data[0].ID, &page.Data[n-1].ID
	}
	writeJSON(w, http.StatusOK, page)
}

// getModel is GET /v1/models/{id}: a model of the catalog, else the
// API's 404.
func (s *server) getModel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	m, ok := s.models.lookup(id)
	if !ok {
		writeAPIError(w, r, apiError{http.StatusNotFound, errNotFound, "model: " + id})
		return
	}
	writeJSON(w, http.StatusOK, m)
}

// modelDate is the release date at the end of a model id:
// claude-3-5-sonnet-20241022.
var modelDate = regexp.MustCompile(`-(\d{8})$`)

// unknownRelease is the created_at of a model without a date in its id:
// the epoch, as the API has it for a release date it does not know.
const unknownRelease = "1970-01-01T00:00:00Z"

// modelLines are the values of a model's line, as the API names them.
var modelLines = []string{"haiku", "sonnet", "opus", "fable", "mythos"}

// describeModel derives a model's description from its id:
// claude-sonnet-4-5 is "Claude Sonnet 4.5", released at an unknown date;
// claude-3-5-haiku-20241022 is "Claude 3.5 Haiku", released on
// 2024-10-22.
func describeModel(id string) modelInfo {
	m := modelInfo{Type: "model", ID: id, CreatedAt: unknownRelease, Lifecycle: "active"}
	name := id
	if sub := modelDate.FindStringSubmatch(id); sub != nil {
		if t, err := time.Parse("20060102", sub[1]); err == nil {
			m.CreatedAt = t.UTC().Format(time.RFC3339)
			name = strings.TrimSuffix(id, sub[0])
		}
	}
	var words []string
	for part := range strings.SplitSeq(name, "-") {
		n := len(words)
		switch {
		case part == "":
		case isDigits(part) && n > 0 && isVersion(words[n-1]):
			words[n-1] += "." + part // 4-5 is 4.5
		default:
			r := []rune(part)
			r[0] = unicode.ToUpper(r[0])
			words = append(words, string(r))
		}
		if slices.Contains(modelLines, part) && m.Line == nil {
			line := part
			m.Line = &line
		}
	}
	m.DisplayName = strings.Join(words, " ")
	if m.DisplayName == "" {
		m.DisplayName = id
	}
	return m
}

func isDigits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

// isVersion reports a version number: digits, with dots between them.
func isVersion(s string) bool {
	return s != "" && strings.Trim(s, "0123456789.") == "" && s[0] != '.'
}
