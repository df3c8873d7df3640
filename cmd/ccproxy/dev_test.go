package main

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/ccproxy/ccproxy/internal/keys"
	"github.com/ccproxy/ccproxy/internal/store"
	"github.com/ccproxy/ccproxy/internal/store/storetest"
)

func TestDevStateSurvivesRestarts(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t)
	dir := t.TempDir()

	secret, err := stateSecret(filepath.Join(dir, "server-secret"))
	if err != nil || len(secret) != 32 {
		t.Fatalf("secret: %d bytes, %v", len(secret), err)
	}
	again, err := stateSecret(filepath.Join(dir, "server-secret"))
	if err != nil || string(again) != string(secret) {
		t.Fatal("the server secret changed across restarts")
	}
	hasher, _ := keys.NewHasher(secret)
	keyFile := filepath.Join(dir, "demo-key")

	first, err := ensureDemoKey(ctx, st, hasher, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Parse(first); err != nil {
		t.Fatalf("demo key %v", err)
	}
	second, err := ensureDemoKey(ctx, st, hasher, keyFile)
	if err != nil || second != first {
		t.Fatalf("restart issued a new key (%v)", err)
	}
	// The key file is lost: the existing demo user gets a new key.
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	third, err := ensureDemoKey(ctx, st, hasher, keyFile)
	if err != nil || third == first {
		t.Fatalf("lost key file: %v", err)
	}
	users, _, err := st.Users().List(ctx, store.UserListOptions{})
	if err != nil || len(users) != 1 || users[0].Name != "demo" {
		t.Fatalf("users = %+v, %v", users, err)
	}
	ks, _ := st.AccessKeys().ListByUser(ctx, users[0].ID)
	if len(ks) != 2 {
		t.Fatalf("demo user has %d keys, want 2", len(ks))
	}
	if raw, _ := os.ReadFile(keyFile); strings.TrimSpace(string(raw)) != third {
		t.Fatal("key file does not hold the current key")
	}
	if st, _ := os.Stat(keyFile); st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", st.Mode().Perm())
	}
}

// TestDevResolver: CCPROXY_DEV_RESOLVE names resolve to their target's
// address, nxdomain ones do not resolve (a *net.DNSError with IsNotFound, which
// envoysim treats as a name without address), and without overrides envoysim
// keeps its own resolver.
func TestDevResolver(t *testing.T) {
	if devResolver(nil) != nil {
		t.Fatal("no overrides: want envoysim's default resolver")
	}
	resolve := devResolver(map[string]string{
		"api.anthropic.com:443":                       "",
		"api.anthropic.com:8443":                      "127.0.0.1:1",
		"bedrock-runtime.us-east-1.amazonaws.com:443": "[::1]:18443",
		"bedrock-runtime.us-east-1.amazonaws.com:80":  "127.0.0.2:80",
	})
	for _, tc := range []struct {
		host string
		want string // addresses, or "nxdomain"
	}{
		{"api.anthropic.com", "nxdomain"},
		{"API.anthropic.com", "nxdomain"},
		{"bedrock-runtime.us-east-1.amazonaws.com", "127.0.0.2,::1"},
	} {
		addrs, err := resolve(context.Background(), tc.host)
		var got string
		var dnsErr *net.DNSError
		switch {
		case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
			got = "nxdomain"
		case err != nil:
			t.Fatalf("%s: %v", tc.host, err)
		default:
			var s []string
			for _, a := range addrs {
				s = append(s, a.String())
			}
			sort.Strings(s)
			got = strings.Join(s, ",")
		}
		if got != tc.want {
			t.Errorf("%s resolves to %s, want %s", tc.host, got, tc.want)
		}
	}
}
