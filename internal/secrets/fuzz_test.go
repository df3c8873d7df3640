package secrets

import (
	"context"
	"errors"
	"testing"

	"github.com/ccproxy/ccproxy/internal/testenv/localkms"
)

// FuzzOpen feeds arbitrary blobs and associated data to a local sealer and to
// a KMS sealer (backed by local-kms, with the same master key for local
// blobs). Open must never panic, and must never return a plaintext other than
// one that was really sealed: forging a blob is out of the fuzzer's reach, so
// any success is a seed blob opened with its own associated data.
func FuzzOpen(f *testing.F) {
	ctx := context.Background()
	srv := localkms.Start(f)
	local := newTestLocal(f, testMasterKey)
	k := NewKMS(srv.Client(), srv.Keys[0].ID).WithLocal(local)

	sealed := map[string]bool{}
	for _, s := range []struct {
		sealer    Sealer
		plaintext string
		aad       string
	}{
		{local, "local secret", "credential:1"},
		{local, "", ""},
		{k, "kms secret", "credential:2"},
		{k, "", ""},
	} {
		blob, err := s.sealer.Seal(ctx, []byte(s.plaintext), []byte(s.aad))
		if err != nil {
			f.Fatal(err)
		}
		sealed[s.plaintext] = true
		f.Add(blob, []byte(s.aad))
		f.Add(blob[:len(blob)/2], []byte(s.aad))
	}
	f.Add([]byte{}, []byte{})
	f.Add([]byte{1}, []byte{})
	f.Add([]byte{1, 1}, []byte{})
	f.Add([]byte{1, 2, 0, 0}, []byte{})
	f.Add([]byte{1, 2, 0xff, 0xff}, []byte{})
	f.Add(kmsShapedBlob(), []byte("x"))

	f.Fuzz(func(t *testing.T, blob, aad []byte) {
		for _, s := range []Sealer{local, k} {
			got, err := s.Open(ctx, blob, aad)
			if err != nil {
				if got != nil {
					t.Fatalf("%T.Open returned %q with error %v", s, got, err)
				}
				if errors.Is(err, context.Canceled) {
					t.Fatal(err)
				}
				continue
			}
			if !sealed[string(got)] {
				t.Fatalf("%T.Open returned %q, which was never sealed", s, got)
			}
		}
	})
}
