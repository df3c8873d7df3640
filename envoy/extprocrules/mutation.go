package extprocrules

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// MutationRules is Filters::Common::MutationRules::Checker
// (source/extensions/filters/common/mutation_rules/mutation_rules.cc, Envoy
// 1.40). The zero value is Envoy's default: no mutation_rules configured.
type MutationRules struct {
	allowAllRouting bool
	allowEnvoy      bool
	disallowAll     bool
	disallowIsError bool
}

type checkResult int

const (
	checkOK checkResult = iota
	checkIgnore
	checkFail
)

type checkOp int

const (
	opSet checkOp = iota
	opAppend
	opRemove
)

// NewMutationRules compiles a filter's mutation_rules; nil gives the default.
func NewMutationRules(r *mutationrulesv3.HeaderMutationRules) MutationRules {
	return MutationRules{
		allowAllRouting: r.GetAllowAllRouting().GetValue(),
		allowEnvoy:      r.GetAllowEnvoy().GetValue(),
		disallowAll:     r.GetDisallowAll().GetValue(),
		disallowIsError: r.GetDisallowIsError().GetValue(),
	}
}

func (r MutationRules) reject() checkResult {
	if r.disallowIsError {
		return checkFail
	}
	return checkIgnore
}

// check decides whether a header may be changed. Defaults: host, :authority,
// :scheme and :method only with allow_all_routing; x-envoy-* only with
// allow_envoy; removing pseudo-headers or host is never allowed; everything
// else (including :path) is allowed.
func (r MutationRules) check(op checkOp, name, value string) checkResult {
	if name == ":status" && op != opRemove {
		code, err := strconv.Atoi(value)
		if err != nil || code < 200 || code > 999 {
			return checkFail
		}
	}
	if r.disallowAll {
		return r.reject()
	}
	if op == opRemove && (strings.HasPrefix(name, ":") || name == "host") {
		return r.reject()
	}
	switch name {
	case ":authority", "host", ":scheme", ":method":
		if r.allowAllRouting {
			return checkOK
		}
		return r.reject()
	}
	if strings.HasPrefix(name, "x-envoy") {
		if r.allowEnvoy {
			return checkOK
		}
		return r.reject()
	}
	return checkOK
}

// maxHeadersCount is the HCM's default max_headers_count (100); mutation
// counts above it are rejected (MutationUtils::responseHeaderSizeCheck).
const maxHeadersCount = 100

// maxHeadersKB is the HCM's default max_request_headers_kb (60).
const maxHeadersKB = 60

// ApplyHeaderMutation follows MutationUtils::applyHeaderMutations
// (source/extensions/filters/http/ext_proc/mutation_utils.cc, Envoy 1.40):
// removals first, then sets; values come from raw_value only (value is
// ignored, since envoyproxy/envoy 8a214e8a71); invalid names or values are
// errors; append_action is ignored and the deprecated append (default false =
// overwrite) decides; rejected changes are ignored or fail per the rules.
// replacing is true for a CONTINUE_AND_REPLACE reply, which may change
// :method; dropContentLength skips content-length writes in the modes where
// the filter removes that header (RemovesContentLength). An error is what
// makes Envoy fail the request.
func ApplyHeaderMutation(m *extprocsvc.HeaderMutation, h *HeaderMap, replacing bool, rules MutationRules, dropContentLength bool) error {
	if len(m.GetRemoveHeaders()) > maxHeadersCount || len(m.GetSetHeaders()) > maxHeadersCount {
		return fmt.Errorf("header mutation remove header count %d or set header count %d exceed the HCM header countlimit %d",
			len(m.GetRemoveHeaders()), len(m.GetSetHeaders()), maxHeadersCount)
	}
	for _, name := range m.GetRemoveHeaders() {
		if !validHeaderName(name) {
			return errors.New("invalid character in remove_headers mutation")
		}
		lname := strings.ToLower(name)
		switch rules.check(opRemove, lname, "") {
		case checkOK:
			h.Remove(lname)
		case checkFail:
			return fmt.Errorf("invalid attempt to remove %s", lname)
		}
	}
	for _, sh := range m.GetSetHeaders() {
		hv := sh.GetHeader()
		if hv == nil {
			continue
		}
		value := string(hv.GetRawValue())
		if !validHeaderName(hv.GetKey()) || !validHeaderValue(value) {
			return errors.New("invalid character in set_headers mutation")
		}
		name := strings.ToLower(hv.GetKey())
		if dropContentLength && name == "content-length" {
			// Newer ext_proc skips content-length writes in modes where it
			// removes the header (shouldRemoveContentLength).
			continue
		}
		//lint:ignore SA1019 Envoy's ext_proc reads the deprecated append field and ignores append_action.
		appendMode := sh.GetAppend().GetValue()
		op := opSet
		if appendMode && h.Has(name) {
			op = opAppend
		}
		res := rules.check(op, name, value)
		if replacing && name == ":method" {
			// CONTINUE_AND_REPLACE may change :method (handleCheckResult).
			res = checkOK
		}
		switch res {
		case checkOK:
			if appendMode {
				h.Add(name, value)
			} else {
				h.Set(name, value)
			}
		case checkFail:
			return fmt.Errorf("invalid attempt to modify %s", name)
		}
	}
	if h.ByteSize() > maxHeadersKB*1024 || len(h.entries) > maxHeadersCount {
		return fmt.Errorf("header mutation causes end result header count %d or header size %d bytes, exceeding the count limit %d or the size limit %d kilobytes",
			len(h.entries), h.ByteSize(), maxHeadersCount, maxHeadersKB)
	}
	return nil
}

// ApplyBodyMutation follows MutationUtils::applyBodyMutations: it returns the
// body that replaces body (a copy of the mutation's bytes), nil for
// clear_body, or body itself when there is no mutation.
func ApplyBodyMutation(m *extprocsvc.BodyMutation, body []byte) []byte {
	switch v := m.GetMutation().(type) {
	case *extprocsvc.BodyMutation_ClearBody:
		if v.ClearBody {
			return nil
		}
	case *extprocsvc.BodyMutation_Body:
		return append([]byte(nil), v.Body...)
	}
	return body
}
