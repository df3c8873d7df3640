//go:build !ccproxyfaults

package upstream

import "context"

// faults is the fault-injection hook of test builds (faults_test_build.go,
// build tag ccproxyfaults). In every other build it injects nothing and
// costs nothing.
type faults struct{}

func (faults) inject(context.Context, []byte) error { return nil }
