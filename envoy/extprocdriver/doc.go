// Package extprocdriver plays Envoy's part against an ext_proc server, for
// measuring what the server costs per request and checking that it answers
// as Envoy requires. It owns the scenario format (Spec), the playing of one
// HTTP exchange through Envoy's ext_proc filters (Scenario.Exchange), the
// checks of the result (Verifier) and the load runner that reports
// throughput, latency and the server's CPU time per request (Run).
//
// A scenario describes one exchange as Envoy 1.40 would carry it: the
// downstream request, the router-level ext_proc filter's configuration, the
// route's header changes, optionally an ext_proc filter in the cluster's
// upstream filter chain (a second stream per exchange), the upstream's
// response and what the request and response must look like afterwards. The
// driver sends exactly the messages Envoy's filter would send for that
// configuration and applies the replies by Envoy's rules (package
// envoy/extprocrules, which envoysim follows too): header mutations under
// the mutation rules, body mutations, CONTINUE_AND_REPLACE, mode_override,
// content-length handling, and the early stream close. Whatever Envoy would
// fail the request for — a gRPC error, a spurious or missing reply, an
// invalid mutation, an ImmediateResponse — is an error, and so is an unmet
// expectation: nothing is counted past an error.
//
// The driver knows only Envoy's API, so the same scenario runs against any
// ext_proc server. The command cmd/extproc-bench wraps it; docs/performance.md
// explains the numbers.
package extprocdriver
