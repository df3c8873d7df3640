package handoff

import (
	"sync"
	"testing"
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
