package router

import (
	"bytes"
	"encoding/json"
	"net/url"
	"slices"
	"strconv"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/ccproxy/ccproxy/extproc/apierror"
	"github.com/ccproxy/ccproxy/extproc/internal/headers"
)

// setHeader returns a mutation that overwrites key with value
// (headers.Set).
func setHeader(key string, value []byte) *corev3.HeaderValueOption { return headers.Set(key, value) }

// rawValue is a header's value (headers.Value).
func rawValue(h *corev3.HeaderValue) []byte { return headers.Value(h) }

// immediate returns an ImmediateResponse. With errType set, the body is
// Anthropic error JSON; otherwise it is empty.
func immediate(code int, errType, message, details string) *extprocv3.ProcessingResponse {
	ir := &extprocv3.ImmediateResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode(code)},
		Details: details,
	}
	if errType != "" {
		ir.Body = apierror.Body(errType, message)
		ir.Headers = &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
			setHeader("content-type", []byte("application/json")),
		}}
		// Retrying a refusal the gateway made (bad key, unknown path) cannot
		// succeed. Without this header Anthropic's SDK, and so Claude Code,
		// retries 4xx answers such as 401 with back-off for minutes before
		// showing the error; with it, Claude Code reports the error at once.
		if code >= 400 && code < 500 {
			ir.Headers.SetHeaders = append(ir.Headers.SetHeaders, setHeader("x-should-retry", []byte("false")))
		}
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: ir}}
}

// streamedResponseMode is the mode_override sent with the response headers
// of a streaming answer: the response body STREAMED, the request body as
// the request headers left it (requestBody: BUFFERED, or NONE after
// skipRequestBodyMode).
func streamedResponseMode(requestBody extprocfilterv3.ProcessingMode_BodySendMode) *extprocfilterv3.ProcessingMode {
	return processingMode(requestBody, extprocfilterv3.ProcessingMode_STREAMED)
}

// skipRequestBodyMode is the mode_override of a request whose route is
// chosen with its headers: no request body, the response BUFFERED as
// configured. With the body mode NONE after the headers reply, Envoy
// releases the body it held meanwhile to the router
// (ProcessorState::handleHeaderContinue in
// source/extensions/filters/http/ext_proc/processor_state.cc, the same at
// v1.37.0 6d9bb7d9 and v1.38.0 f1dd21b1), which still buffers it for a
// retry.
func skipRequestBodyMode() *extprocfilterv3.ProcessingMode {
	return processingMode(extprocfilterv3.ProcessingMode_NONE, extprocfilterv3.ProcessingMode_BUFFERED)
}

// processingMode is the router filter's configured mode (see the data-path
// contract) with the two body modes given. Every field is stated because
// Envoy copies an override's body modes verbatim (an unset one is NONE) and
// releases disagree on what a DEFAULT header mode means there
// (effectiveModeOverride in ext_proc.cc, processor_state.cc).
func processingMode(requestBody, responseBody extprocfilterv3.ProcessingMode_BodySendMode) *extprocfilterv3.ProcessingMode {
	return &extprocfilterv3.ProcessingMode{
		RequestHeaderMode:   extprocfilterv3.ProcessingMode_SEND,
		ResponseHeaderMode:  extprocfilterv3.ProcessingMode_SEND,
		RequestBodyMode:     requestBody,
		ResponseBodyMode:    responseBody,
		RequestTrailerMode:  extprocfilterv3.ProcessingMode_SKIP,
		ResponseTrailerMode: extprocfilterv3.ProcessingMode_SKIP,
	}
}

// Pagination bounds of GET /v1/models, as in Anthropic's API.
const (
	defaultModelsLimit = 20
	maxModelsLimit     = 1000
)

type modelJSON struct {
	Type        string `json:"type"`
	ID          string `json:"id"`
	DisplayName string `json:"display_name"`
	CreatedAt   string `json:"created_at"`
}

type modelListJSON struct {
	Data    []modelJSON `json:"data"`
	HasMore bool        `json:"has_more"`
	FirstID *string     `json:"first_id"`
	LastID  *string     `json:"last_id"`
}

// modelsResponse answers GET /v1/models[?limit=&after_id=&before_id=] from
// the configured list, in Anthropic's list format: the models of allowed
// only, when it is not nil (a team's allow-list).
func (r *Router) modelsResponse(path []byte, allowed []string) *extprocv3.ProcessingResponse {
	var q url.Values
	if i := bytes.IndexByte(path, '?'); i >= 0 {
		q, _ = url.ParseQuery(string(path[i+1:]))
	}
	limit := defaultModelsLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxModelsLimit {
			return immediate(400, apierror.InvalidRequest, "limit: must be an integer between 1 and 1000", "ccproxy_models_bad_limit")
		}
		limit = n
	}
	models := r.modelList()
	if allowed != nil {
		cfg := r.runtimeConfig()
		models = slices.DeleteFunc(slices.Clone(models), func(m Model) bool { return !modelAllowed(cfg, allowed, m.ID) })
	}
	if id := q.Get("after_id"); id != "" {
		models = models[indexAfter(models, id):]
	}
	hasMore := false
	if id := q.Get("before_id"); id != "" {
		// Paging backwards: the page is the limit models just before id.
		models = models[:max(indexOf(models, id), 0)]
		if len(models) > limit {
			models, hasMore = models[len(models)-limit:], true
		}
	} else if len(models) > limit {
		models, hasMore = models[:limit], true
	}
	list := modelListJSON{Data: make([]modelJSON, 0, len(models)), HasMore: hasMore}
	for _, m := range models {
		name := m.DisplayName
		if name == "" {
			name = m.ID
		}
		list.Data = append(list.Data, modelJSON{
			Type:        "model",
			ID:          m.ID,
			DisplayName: name,
			CreatedAt:   m.CreatedAt.UTC().Format(time.RFC3339),
		})
	}
	if n := len(list.Data); n > 0 {
		list.FirstID, list.LastID = &list.Data[0].ID, &list.Data[n-1].ID
	}
	body, err := json.Marshal(list)
	if err != nil {
		return immediate(500, apierror.API, "ccproxy: could not list models", "ccproxy_models_failed")
	}
	resp := immediate(200, "", "", "ccproxy_models")
	ir := resp.GetImmediateResponse()
	ir.Body = body
	ir.Headers = &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
		setHeader("content-type", []byte("application/json")),
	}}
	return resp
}

func indexOf(models []Model, id string) int {
	for i, m := range models {
		if m.ID == id {
			return i
		}
	}
	return -1
}

// indexAfter returns the index just past the model with id, or len(models)
// when there is none (an unknown cursor yields an empty page).
func indexAfter(models []Model, id string) int {
	if i := indexOf(models, id); i >= 0 {
		return i + 1
	}
	return len(models)
}
