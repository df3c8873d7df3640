package parked

import (
	"sync"
	"testing"
)

type waiter struct{ ch, other chan struct{} }

//go:noinline
func (w *waiter) selects() {
	select {
	case <-w.ch:
	case <-w.other:
	}
}

//go:noinline
func (w *waiter) receives() { <-w.ch }

const (
	selects  = "github.com/ccproxy/ccproxy/internal/testenv/parked.(*waiter).selects"
	receives = "github.com/ccproxy/ccproxy/internal/testenv/parked.(*waiter).receives"
)

func TestCountAndWait(t *testing.T) {
	w := &waiter{ch: make(chan struct{}), other: make(chan struct{})}
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(w.selects)
	}
	for range 2 {
		wg.Go(w.receives)
	}
	Wait(t, 5, "select", selects)
	Wait(t, 2, "chan receive", receives)
	if n := Count("select", selects); n != 5 {
		t.Errorf("Count(select, selects) = %d, want 5", n)
	}
	if n := Count("chan receive", selects); n != 0 {
		t.Errorf("Count(chan receive, selects) = %d, want 0: wrong state", n)
	}
	if n := Count("select", selects[:len(selects)-1]); n != 0 {
		t.Errorf("a prefix of the name matched %d goroutines, want 0", n)
	}
	close(w.ch)
	wg.Wait()
	if n := Count("select", selects) + Count("chan receive", receives); n != 0 {
		t.Errorf("%d goroutines still counted after they returned", n)
	}
}
