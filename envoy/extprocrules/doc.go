// Package extprocrules owns the rules by which Envoy 1.40's ext_proc HTTP
// filter presents an HTTP message to a processor and applies the processor's
// replies: the header map as the filter sends it, header mutations checked
// against the mutation rules, body mutations, how a mode_override combines
// with the configured processing mode, and when content-length is dropped.
//
// envoysim's ext_proc filter and the bench driver (envoy/extprocdriver) both
// follow these rules, so the two agree with each other and with Envoy; the
// functions name the Envoy source they follow. Like envoysim, the package
// knows only Envoy's APIs, nothing of ccproxy.
package extprocrules
