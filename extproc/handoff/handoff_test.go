package handoff

import (
	"sync"
	"testing"

	"github.com/ccproxy/ccproxy/internal/dataplane"
)

func TestStore(t *testing.T) {
	s := NewStore()
	r := &Request{Path: "/model/x/invoke"}
	id := s.Put(r)
	if len(id) != 32 {
		t.Fatalf("id %q: want 32 hex digits", id)
	}
	if got := s.Get(id); got != r {
		t.Fatalf("Get(%q) = %v, want the stored request", id, got)
	}
	for _, bad := range []string{"", "zz", id[:31], "zz" + id[2:], id + "0"} {
		if got := s.Get(bad); got != nil {
			t.Errorf("Get(%q) = %v, want nil", bad, got)
		}
		s.Delete(bad) // must not panic
	}
	if id2 := s.Put(r); id2 == id {
		t.Fatalf("two Puts gave the same id %q", id)
	}
	s.Delete(id)
	if got := s.Get(id); got != nil {
		t.Fatalf("Get after Delete = %v", got)
	}
	if n := s.Len(); n != 1 {
		t.Fatalf("Len = %d, want 1", n)
	}
}

func TestStoreConcurrent(t *testing.T) {
	s := NewStore()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				r := &Request{}
				id := s.Put(r)
				if s.Get(id) != r {
					t.Error("lost a request")
					return
				}
				s.Delete(id)
			}
		}()
	}
	wg.Wait()
	if n := s.Len(); n != 0 {
		t.Fatalf("Len = %d after all deletes", n)
	}
}

func BenchmarkPutGetDelete(b *testing.B) {
	s := NewStore()
	r := &Request{}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := s.Put(r)
			_ = s.Get(id)
			s.Delete(id)
		}
	})
}

func TestLookup(t *testing.T) {
	s := NewStore()
	a := &Request{RequestID: "req-a"}
	idA := s.Put(a)
	noID := &Request{}
	idNoID := s.Put(noID)
	// Every Request here was stored by the peer "", as are the lookups.
	lookup := func(stateID, requestID string) *Request {
		t.Helper()
		r, err := s.Lookup(stateID, requestID, "")
		if err != nil {
			t.Fatalf("Lookup(%q, %q): %v", stateID, requestID, err)
		}
		return r
	}

	tests := []struct {
		name           string
		stateID, reqID string
		want           *Request
	}{
		{"state id wins", idA, "req-other", a},
		{"unknown state id is not retried by request id", "ffffffffffffffffffffffffffffffff", "req-a", nil},
		{"request id when the state header is gone", "", "req-a", a},
		{"unknown request id", "", "req-b", nil},
		{"neither", "", "", nil},
		{"request without an id by its state id", idNoID, "", noID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := lookup(tt.stateID, tt.reqID); got != tt.want {
				t.Fatalf("Lookup(%q, %q) = %p, want %p", tt.stateID, tt.reqID, got, tt.want)
			}
		})
	}

	t.Run("a shared request id resolves to neither", func(t *testing.T) {
		dup := &Request{RequestID: "req-a"}
		idDup := s.Put(dup)
		if got := lookup("", "req-a"); got != nil {
			t.Fatalf("Lookup by a shared request id = %p, want nil", got)
		}
		s.Delete(idDup)
		if got := lookup("", "req-a"); got != a {
			t.Fatalf("after the duplicate ended: Lookup = %p, want the first request", got)
		}
	})
	t.Run("delete removes the index entry", func(t *testing.T) {
		s.Delete(idA)
		if got := lookup("", "req-a"); got != nil {
			t.Fatalf("Lookup after Delete = %p", got)
		}
		n := 0
		for i := range s.byRequestID {
			n += len(s.byRequestID[i].m)
		}
		if n != 0 {
			t.Fatalf("index holds %d request ids after every indexed request ended", n)
		}
	})
}

func TestAttempts(t *testing.T) {
	var a Attempts
	i := a.Start(dataplane.BackendPlan)
	j := a.Start(dataplane.BackendBedrock)
	a.Respond(i, 429)
	a.Respond(7, 500) // out of range: ignored
	got := a.List()
	want := []Attempt{{Backend: dataplane.BackendPlan, Status: 429}, {Backend: dataplane.BackendBedrock}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("List = %+v, want %+v", got, want)
	}
	a.Respond(j, 200)
	if got[1].Status != 0 {
		t.Fatal("List returned a view, not a copy")
	}
}

// recordingWatcher keeps what it is told.
type recordingWatcher struct {
	mu     sync.Mutex
	failed []Attempt
}

func (w *recordingWatcher) AttemptFailed(a Attempt) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failed = append(w.failed, a)
}

// TestFailAttempt: a failure is recorded once per attempt and reported to
// the watcher once; failures of unknown attempts, and FailureNone, change
// nothing.
func TestFailAttempt(t *testing.T) {
	w := &recordingWatcher{}
	r := &Request{Watcher: w}
	i := r.Attempts.Start(dataplane.BackendPlan)
	r.Attempts.Respond(i, 429)
	j := r.Attempts.Start(dataplane.BackendBedrock)
	r.FailAttempt(j, FailureLate)
	r.FailAttempt(j, FailureStream) // already failed: ignored
	r.FailAttempt(i+7, FailureStream)
	r.FailAttempt(-1, FailureStream)
	r.FailAttempt(i, FailureNone)
	want := []Attempt{{Backend: dataplane.BackendPlan, Status: 429}, {Backend: dataplane.BackendBedrock, Failure: FailureLate}}
	if got := r.Attempts.List(); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("attempts %+v, want %+v", got, want)
	}
	if len(w.failed) != 1 || w.failed[0] != want[1] {
		t.Fatalf("watcher told %+v, want once %+v", w.failed, want[1])
	}
	// Without a watcher the failure is still recorded.
	var r2 Request
	k := r2.Attempts.Start(dataplane.BackendBedrock)
	r2.FailAttempt(k, FailureStream)
	if got := r2.Attempts.List(); got[0].Failure != FailureStream {
		t.Fatalf("attempt %+v, want stream_failed", got[0])
	}
	for _, tt := range []struct {
		f      Failure
		name   string
		status int
	}{{FailureNone, "none", 500}, {FailureLate, "late", 504}, {FailureStream, "stream_failed", 500}, {Failure(9), "unknown", 500}} {
		if tt.f.String() != tt.name || tt.f.Status() != tt.status {
			t.Errorf("%d: %q %d, want %q %d", tt.f, tt.f.String(), tt.f.Status(), tt.name, tt.status)
		}
	}
}

// TestLookupBindsToThePeer: a Request holds what a Bedrock call needs, the
// credential included, so a stream from another peer than the one that
// stored it never finds it, by state id or by request id.
func TestLookupBindsToThePeer(t *testing.T) {
	s := NewStore()
	r := &Request{RequestID: "req-a", Peer: "unix:pid=10"}
	id := s.Put(r)
	tests := []struct {
		name           string
		stateID, reqID string
		peer           string
		want           *Request
		wantErr        error
	}{
		{"same peer by state id", id, "", "unix:pid=10", r, nil},
		{"same peer by request id", "", "req-a", "unix:pid=10", r, nil},
		{"other peer by state id", id, "", "unix:pid=11", nil, ErrOtherPeer},
		{"other peer by request id", "", "req-a", "unix:pid=11", nil, ErrOtherPeer},
		{"untagged stream", id, "", "", nil, ErrOtherPeer},
		{"other peer, unknown id: just absent", "ffffffffffffffffffffffffffffffff", "", "unix:pid=11", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Lookup(tt.stateID, tt.reqID, tt.peer)
			if got != tt.want || err != tt.wantErr {
				t.Fatalf("Lookup = %p, %v; want %p, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
