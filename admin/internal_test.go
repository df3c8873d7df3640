package admin

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ccproxy/ccproxy/internal/store"
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

// TestThrottleRule walks one key through its attempts: Limit at once, then
// waits doubling to the cap, a success taking its own attempt back, and the
// count forgotten after Forget.
func TestThrottleRule(t *testing.T) {
	r := ThrottleRule{Limit: 3, Delay: time.Minute, MaxDelay: 5 * time.Minute, Forget: time.Hour}
	t0 := time.Unix(1_000_000, 0)
	tests := []struct {
		name        string
		at          time.Duration // attempt time after t0
		wantWait    time.Duration // wait before the attempt
		wantNext    time.Duration // NextAttemptAt after counting it, from t0; 0 = none
		wantExpires time.Duration
	}{
		{"first", 0, 0, 0, time.Hour},
		{"second", 0, 0, 0, time.Hour},
		{"third starts the delay", 0, 0, time.Minute, time.Hour},
		{"fourth too early", 30 * time.Second, 30 * time.Second, -1, -1},
		{"fourth after its wait doubles it", time.Minute, 0, 3 * time.Minute, time.Minute + time.Hour},
		{"fifth", 3 * time.Minute, 0, 7 * time.Minute, 3*time.Minute + time.Hour},
		{"sixth is capped", 7 * time.Minute, 0, 12 * time.Minute, 7*time.Minute + time.Hour},
		{"seventh stays capped", 12 * time.Minute, 0, 17 * time.Minute, 12*time.Minute + time.Hour},
	}
	var st store.LoginThrottle
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			now := t0.Add(tc.at)
			if w := r.wait(st, now); w != tc.wantWait {
				t.Fatalf("wait = %v, want %v", w, tc.wantWait)
			}
			if tc.wantWait > 0 {
				return
			}
			st = r.count(st, now)
			wantNext := time.Time{}
			if tc.wantNext > 0 {
				wantNext = t0.Add(tc.wantNext)
			}
			if !st.NextAttemptAt.Equal(wantNext) || !st.ExpiresAt.Equal(t0.Add(tc.wantExpires)) {
				t.Fatalf("state %+v, want next %v expires %v", st, wantNext, t0.Add(tc.wantExpires))
			}
		})
	}
	t.Run("a success takes its attempt back", func(t *testing.T) {
		st := r.uncount(store.LoginThrottle{Attempts: 3, NextAttemptAt: t0.Add(time.Minute)}, t0)
		if st.Attempts != 2 || !st.NextAttemptAt.IsZero() {
			t.Fatalf("after uncount %+v", st)
		}
		st = r.uncount(store.LoginThrottle{Attempts: 5, NextAttemptAt: t0.Add(time.Minute)}, t0)
		if st.Attempts != 4 || !st.NextAttemptAt.Equal(t0.Add(time.Minute)) {
			t.Fatalf("after uncount above the limit %+v", st)
		}
		if st := r.uncount(store.LoginThrottle{}, t0); st.Attempts != 0 {
			t.Fatalf("uncount of nothing %+v", st)
		}
	})
	t.Run("delay never overflows", func(t *testing.T) {
		huge := ThrottleRule{Limit: 1, Delay: time.Second, MaxDelay: 1<<63 - 1, Forget: time.Hour}
		if d := huge.delay(1000); d != huge.MaxDelay {
			t.Fatalf("delay(1000) = %v", d)
		}
		if d := r.delay(0); d != time.Minute {
			t.Fatalf("delay(0) = %v", d)
		}
	})
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

// FuzzSlicePageCursor feeds untrusted cursors and limits to the
// offset-cursor pager: a cursor is accepted only in the form slicePage
// issues (base64url of "o:" and a decimal offset) and then yields exactly
// the items from that offset; and paging from the start with the cursors
// it returns covers every item exactly once, in order, the tail included,
// in full pages but the last.
func FuzzSlicePageCursor(f *testing.F) {
	for _, s := range []string{"", "bzoy", "bzotMQ", "bzo5OTk5OTk5OTk5OTk5OTk5OTk5", "!!", "eDo1", "bzow", "bzorMQ", "bzowMQ", "bzo"} {
		f.Add(s, 2, uint8(5))
	}
	f.Add("", 0, uint8(120))             // the default page size, with a tail
	f.Add("bzox", math.MaxInt, uint8(3)) // a limit beyond any offset
	f.Add("", -1, uint8(0))
	f.Fuzz(func(t *testing.T, cursor string, limit int, n uint8) {
		items := make([]int, n)
		for i := range items {
			items[i] = i
		}
		size := limit
		if size <= 0 {
			size = store.DefaultPageSize
		}

		pg, next, ok := slicePage(items, limit, cursor)
		off, valid := 0, true
		if cursor != "" {
			raw, err := base64.RawURLEncoding.DecodeString(cursor)
			digits, hasPrefix := strings.CutPrefix(string(raw), "o:")
			o, perr := strconv.Atoi(digits)
			valid = err == nil && hasPrefix && perr == nil && o >= 0
			off = min(max(o, 0), len(items))
		}
		if ok != valid {
			t.Fatalf("slicePage(%q) accepted = %v, want %v", cursor, ok, valid)
		}
		if ok {
			end := off + min(size, len(items)-off)
			if !slices.Equal(pg, items[off:end]) {
				t.Fatalf("slicePage(n=%d, limit %d, offset %d) = %v, want %v", n, limit, off, pg, items[off:end])
			}
			if want := base64.RawURLEncoding.EncodeToString([]byte("o:" + strconv.Itoa(end))); (next != "") != (end < len(items)) || next != "" && next != want {
				t.Fatalf("next cursor %q after items[%d:%d] of %d", next, off, end, len(items))
			}
		}

		var got []int
		cursor = ""
		for page := 0; ; page++ {
			pg, next, ok := slicePage(items, limit, cursor)
			if !ok {
				t.Fatalf("slicePage rejected its own cursor %q", cursor)
			}
			if next != "" && len(pg) != size || next == "" && len(pg) > size {
				t.Fatalf("page %d has %d items (next %q), want pages of %d", page, len(pg), next, size)
			}
			got = append(got, pg...)
			if next == "" {
				break
			}
			if page > len(items) {
				t.Fatalf("no end after %d pages", page)
			}
			cursor = next
		}
		if !slices.Equal(got, items) {
			t.Fatalf("paging %d items by %d gave %v", n, limit, got)
		}
	})
}

// FuzzOptional feeds untrusted JSON to the PATCH field decoder and checks
// each field against encoding/json's own matching of members to fields
// (exact or case-insensitive names, the last one winning): absent, null,
// or the last string.
func FuzzOptional(f *testing.F) {
	for _, s := range []string{`{}`, `{"name":null}`, `{"name":"x","email":null}`, `{"monthly_budget_usd":1}`, `{"name":`,
		`{"email":null,"email":"a@b"}`, `{"name":"x","name":null}`, `{"NAME":"a","name":"b","Name":null}`, `{"status":"active","x":{"name":null}}`} {
		f.Add(s)
	}
	fields := []string{"name", "email", "routing_strategy", "monthly_budget_usd", "status"}
	f.Fuzz(func(t *testing.T, s string) {
		var p patchUserRequest
		if err := json.Unmarshal([]byte(s), &p); err != nil {
			return
		}
		got := []optional[string]{p.Name, p.Email, p.RoutingStrategy, p.MonthlyBudgetUSD, p.Status}
		keys, vals := topMembers(t, s)
		for i, field := range fields {
			var want optional[string]
			for j, k := range keys {
				if !strings.EqualFold(k, field) {
					continue
				}
				want = optional[string]{Set: true}
				if string(vals[j]) == "null" {
					want.Null = true
				} else if err := json.Unmarshal(vals[j], &want.Value); err != nil {
					t.Fatalf("%s: %v", vals[j], err)
				}
			}
			if got[i] != want {
				t.Fatalf("%s: %s = %+v, want %+v", s, field, got[i], want)
			}
		}
	})
}

// topMembers lists the members of the JSON object s: keys and raw values.
func topMembers(t *testing.T, s string) (keys []string, vals []json.RawMessage) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, nil // null: no members
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		keys, vals = append(keys, k.(string)), append(vals, v)
	}
	return keys, vals
}
