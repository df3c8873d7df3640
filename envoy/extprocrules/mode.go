package extprocrules

import (
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
)

// AttributesKey is where the filter puts the values of its
// request_attributes and response_attributes in ProcessingRequest.attributes
// (ext_proc.cc FilterName): a Struct keyed by the attribute expression.
const AttributesKey = "envoy.filters.http.ext_proc"

// EffectiveModeOverride is the processing mode in force after a
// mode_override: DEFAULT header/trailer modes in the override leave the
// configured mode; body modes are copied verbatim, an unset one meaning NONE
// (ext_proc.cc, since 1.34).
func EffectiveModeOverride(override, configured *extprocv3.ProcessingMode) *extprocv3.ProcessingMode {
	m := &extprocv3.ProcessingMode{
		RequestHeaderMode:   configured.GetRequestHeaderMode(),
		ResponseHeaderMode:  configured.GetResponseHeaderMode(),
		RequestTrailerMode:  configured.GetRequestTrailerMode(),
		ResponseTrailerMode: configured.GetResponseTrailerMode(),
		RequestBodyMode:     override.GetRequestBodyMode(),
		ResponseBodyMode:    override.GetResponseBodyMode(),
	}
	if v := override.GetRequestHeaderMode(); v != extprocv3.ProcessingMode_DEFAULT {
		m.RequestHeaderMode = v
	}
	if v := override.GetResponseHeaderMode(); v != extprocv3.ProcessingMode_DEFAULT {
		m.ResponseHeaderMode = v
	}
	if v := override.GetRequestTrailerMode(); v != extprocv3.ProcessingMode_DEFAULT {
		m.RequestTrailerMode = v
	}
	if v := override.GetResponseTrailerMode(); v != extprocv3.ProcessingMode_DEFAULT {
		m.ResponseTrailerMode = v
	}
	return m
}

// SendsHeaders reports whether a direction's headers go to the processor in
// header mode m: unless SKIP (DecodingProcessorState/EncodingProcessorState::
// setProcessingModeInternal), so DEFAULT means SEND.
func SendsHeaders(m extprocv3.ProcessingMode_HeaderSendMode) bool {
	return m != extprocv3.ProcessingMode_SKIP
}

// RemovesContentLength is ProcessorState::shouldRemoveContentLength: in
// STREAMED, BUFFERED_PARTIAL, FULL_DUPLEX_STREAMED, and BUFFERED without
// header processing, the filter drops a direction's content-length (the
// processor may change the body's length after the headers are gone).
func RemovesContentLength(bodyMode extprocv3.ProcessingMode_BodySendMode, sendHeaders bool) bool {
	switch bodyMode {
	case extprocv3.ProcessingMode_STREAMED, extprocv3.ProcessingMode_BUFFERED_PARTIAL, extprocv3.ProcessingMode_FULL_DUPLEX_STREAMED:
		return true
	case extprocv3.ProcessingMode_BUFFERED:
		return !sendHeaders
	}
	return false
}
