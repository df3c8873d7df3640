package admin

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestPasswordHash(t *testing.T) {
	h, err := hashPassword("s3cret password")
	if err != nil {
		t.Fatal(err)
	}
	h2, _ := hashPassword("s3cret password")
	if h == h2 {
		t.Error("two hashes of one password are equal: no salt")
	}
	tests := []struct {
		name, hash, password string
		ok, err              bool
	}{
		{"match", h, "s3cret password", true, false},
		{"mismatch", h, "s3cret passworD", false, false},
		{"empty", h, "", false, false},
		{"bcrypt", "$2a$10$abcdefghijklmnopqrstuu", "x", false, true},
		{"argon2i", strings.Replace(h, "argon2id", "argon2i", 1), "s3cret password", false, true},
		{"bad params", "$argon2id$v=19$m=0,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "x", false, true},
		{"huge memory", "$argon2id$v=19$m=99999999,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "x", false, true},
		{"bad salt", "$argon2id$v=19$m=8,t=1,p=1$!!$aGFzaGhhc2hoYXNoaGFzaA", "x", false, true},
		{"short hash", "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA", "x", false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ok, err := verifyPassword(tc.hash, tc.password)
			if ok != tc.ok || (err != nil) != tc.err {
				t.Errorf("verifyPassword = %v, %v; want %v, error %v", ok, err, tc.ok, tc.err)
			}
		})
	}
}

func TestThrottleBounded(t *testing.T) {
	th := newThrottle(3)
	now := time.Unix(1000, 0)
	for i := range 10 {
		th.fail(fmt.Sprint("k", i), now.Add(time.Duration(i)*time.Second))
	}
	if n := len(th.entries); n != 3 {
		t.Errorf("%d entries, want 3", n)
	}
	for range maxLoginFailures {
		th.fail("a", now)
	}
	if w := th.blocked("a", now.Add(time.Minute)); w != loginWindow-time.Minute {
		t.Errorf("blocked for %v, want %v", w, loginWindow-time.Minute)
	}
	if w := th.blocked("a", now.Add(loginWindow)); w != 0 {
		t.Errorf("still blocked after the window: %v", w)
	}
	th.reset("a")
	if w := th.blocked("a", now); w != 0 {
		t.Errorf("blocked after reset: %v", w)
	}
}

func TestSlicePage(t *testing.T) {
	items := []int{1, 2, 3, 4, 5}
	var got [][]int
	cursor := ""
	for {
		pg, next, ok := slicePage(items, 2, cursor)
		if !ok {
			t.Fatalf("cursor %q rejected", cursor)
		}
		got = append(got, pg)
		if next == "" {
			break
		}
		cursor = next
	}
	if fmt.Sprint(got) != "[[1 2] [3 4] [5]]" {
		t.Errorf("pages %v", got)
	}
	for _, c := range []string{"!!", "bzotMQ", "eDo1"} {
		if _, _, ok := slicePage(items, 2, c); ok {
			t.Errorf("cursor %q accepted", c)
		}
	}
}

// FuzzSlicePageCursor feeds untrusted cursors to the offset-cursor parser.
func FuzzSlicePageCursor(f *testing.F) {
	for _, s := range []string{"", "bzoy", "bzotMQ", "bzo5OTk5OTk5OTk5OTk5OTk5OTk5", "!!", "eDo1"} {
		f.Add(s, 2)
	}
	f.Fuzz(func(t *testing.T, cursor string, limit int) {
		items := []int{1, 2, 3}
		pg, next, ok := slicePage(items, limit, cursor)
		if !ok {
			return
		}
		if len(pg) > len(items) || (next != "" && len(pg) == 0) {
			t.Fatalf("page %v next %q", pg, next)
		}
	})
}

// FuzzOptional feeds untrusted JSON to the PATCH field decoder.
func FuzzOptional(f *testing.F) {
	for _, s := range []string{`{}`, `{"name":null}`, `{"name":"x","email":null}`, `{"monthly_budget_usd":1}`, `{"name":`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var p patchUserRequest
		if err := json.Unmarshal([]byte(s), &p); err != nil {
			return
		}
		if p.Name.Null && p.Name.Value != "" {
			t.Fatalf("null name with value %q", p.Name.Value)
		}
		if !p.Name.Set && (p.Name.Null || p.Name.Value != "") {
			t.Fatalf("unset name %+v", p.Name)
		}
	})
}
