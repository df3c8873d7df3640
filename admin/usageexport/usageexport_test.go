package usageexport_test

import (
	"bytes"
	"encoding/csv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/admin/usageexport"
	"github.com/ccproxy/ccproxy/internal/store"
)

func TestNeutralize(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"", ""},
		{"claude-sonnet-4-5", "claude-sonnet-4-5"},
		{"=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"},
		{"+1", "'+1"},
		{"-2+3", "'-2+3"},
		{"@SUM(A1)", "'@SUM(A1)"},
		{"\tx", "'\tx"},
		{"\r=1", "'\r=1"},
		{"a=1", "a=1"},
		{"0.000035", "0.000035"},
		{"'=1", "'=1"},
	} {
		if got := usageexport.Neutralize(tt.in); got != tt.want {
			t.Errorf("Neutralize(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzWriter writes records of arbitrary cells and reads them back with a
// standard CSV reader: the record count and cell count survive, every cell
// reads back as itself or, when it starts with a formula character, as
// itself behind an apostrophe, and no cell read back starts with one.
func FuzzWriter(f *testing.F) {
	for _, s := range []string{"", "a", "=1+2", "+x", "-y", "@z", "\tq", "\r\n=cmd", "a,b", "\"q\"", "x\ny", "é=", "\x00"} {
		f.Add(s, "plain")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		// encoding/csv reads \r\n inside quotes as \n, and drops a lone
		// \r at a line end; compare what survives that normalisation.
		records := [][]string{{a, b}, {b, a, "3"}}
		var buf bytes.Buffer
		w := usageexport.NewWriter(&buf, nil)
		for _, r := range records {
			if err := w.Write(r); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		rd := csv.NewReader(&buf)
		rd.FieldsPerRecord = -1
		got, err := rd.ReadAll()
		if err != nil {
			t.Fatalf("read back %q: %v", buf.String(), err)
		}
		if len(got) != len(records) {
			t.Fatalf("%d records read back, want %d", len(got), len(records))
		}
		for i, r := range records {
			if len(got[i]) != len(r) {
				t.Fatalf("record %d: %d cells, want %d", i, len(got[i]), len(r))
			}
			for j, cell := range r {
				want := strings.ReplaceAll(usageexport.Neutralize(cell), "\r\n", "\n")
				g := got[i][j]
				if g != want && strings.ReplaceAll(g, "\r", "") != strings.ReplaceAll(want, "\r", "") {
					t.Fatalf("cell %q read back as %q, want %q", cell, g, want)
				}
				if g != "" && strings.ContainsRune("=+-@\t\r", rune(g[0])) {
					t.Fatalf("cell %q reads back as %q: starts with a formula character", cell, g)
				}
			}
		}
	})
}

func TestRequestRecord(t *testing.T) {
	ttft := 120
	e := store.ExportEvent{UserName: "=cmd|' /C calc'!A0", UsageEvent: store.UsageEvent{
		RequestID: "req-1", EventTime: time.Date(2026, 11, 30, 23, 30, 1, 5000, time.UTC),
		UserID: uuid.MustParse("11111111-1111-1111-1111-111111111111"), AccessKeyID: uuid.MustParse("22222222-2222-2222-2222-222222222222"),
		SessionID: "s1", Kind: store.KindMessages, RequestedModel: "claude-sonnet-4-5",
		BedrockModelID: "us.anthropic.claude-sonnet-4-5-20250929-v1:0", Provider: store.ProviderBedrock, Region: "us-east-1",
		Fallback: true, FallbackReason: "plan_429", Status: 200, InputTokens: 10, OutputTokens: 20, CacheReadTokens: 30,
		CacheWrite5mTokens: 40, CacheWrite1hTokens: 50, CostUSD: decimal.RequireFromString("0.012345"),
		PriceFlag: store.PriceExact, TTFTMs: &ttft, LatencyMs: 900,
	}}
	paris, _ := time.LoadLocation("Europe/Paris")
	got := usageexport.RequestRecord(e, paris)
	if len(got) != len(usageexport.RequestColumns) {
		t.Fatalf("%d cells for %d columns", len(got), len(usageexport.RequestColumns))
	}
	want := []string{"0.012345", "0.012345", "0.012345", "0.012345", "USD",
		// 23:30 UTC on 30 November is 1 December in Paris.
		"2026-11-30T23:00:00Z", "2026-12-31T23:00:00Z", "2026-11-30T23:00:00Z", "2026-12-01T00:00:00Z",
		"Usage", "Usage-Based", "claude-sonnet-4-5 messages via bedrock (fallback)", "150", "Tokens",
		"AWS", "Anthropic", "AWS", "Amazon Bedrock", "AI and Machine Learning",
		"us-east-1", "22222222-2222-2222-2222-222222222222", "Access key", "claude-sonnet-4-5",
		"11111111-1111-1111-1111-111111111111", "=cmd|' /C calc'!A0",
		"req-1", "2026-11-30T23:30:01.000005Z", "22222222-2222-2222-2222-222222222222", "bedrock", "claude-sonnet-4-5",
		"us.anthropic.claude-sonnet-4-5-20250929-v1:0", "messages", "200", "true", "plan_429", "s1", "1",
		"10", "20", "30", "40", "50", "0.012345", "exact", "900", "false"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("RequestRecord =\n%q\nwant\n%q", got, want)
	}
	// Plan usage is not billed: only ListCost carries its list-price
	// equivalent.
	e.Provider, e.Region = store.ProviderAnthropic, ""
	got = usageexport.RequestRecord(e, nil)
	if got[0] != "0.000000" || got[1] != "0.000000" || got[2] != "0.012345" || got[3] != "0.000000" || got[17] != "Claude (Anthropic subscription)" {
		t.Fatalf("Plan row costs/service = %q", got[:18])
	}
	// The CSV holds the user's name neutralised.
	var buf bytes.Buffer
	w := usageexport.NewWriter(&buf, nil)
	_ = w.Write(got)
	_ = w.Flush()
	if !strings.Contains(buf.String(), `,'=cmd|' /C calc'!A0,`) {
		t.Fatalf("user name not neutralised: %s", buf.String())
	}
}

func TestDailyRecord(t *testing.T) {
	d := store.DailyUsage{Day: time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC), UserID: uuid.MustParse("11111111-1111-1111-1111-111111111111"),
		UserName: "alice", Model: "claude-opus-4-5", Provider: store.ProviderAnthropic, Requests: 3, InputTokens: 1, OutputTokens: 2,
		CostUSD: decimal.RequireFromString("1.5"), Fallbacks: 0, Errors: 1}
	got := usageexport.DailyRecord(d, nil)
	want := []string{"0.000000", "0.000000", "1.500000", "0.000000", "USD",
		"2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z", "2026-11-02T00:00:00Z", "2026-11-03T00:00:00Z",
		"Usage", "Usage-Based", "claude-opus-4-5 via anthropic", "3", "Tokens",
		"Anthropic", "Anthropic", "Anthropic", "Claude (Anthropic subscription)", "AI and Machine Learning",
		"", "", "", "claude-opus-4-5", "11111111-1111-1111-1111-111111111111", "alice",
		"2026-11-02", "anthropic", "claude-opus-4-5", "3", "1", "2", "0", "0", "0", "1.500000", "0", "1"}
	if len(got) != len(usageexport.DailyColumns) || strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("DailyRecord =\n%q\nwant\n%q", got, want)
	}
}

// TestWriterFlushesAsItGoes: the writer hands every FlushEvery records to
// the connection, so an export never sits whole in memory.
func TestWriterFlushesAsItGoes(t *testing.T) {
	var buf bytes.Buffer
	var flushedAt []int
	w := usageexport.NewWriter(&buf, func() error {
		flushedAt = append(flushedAt, strings.Count(buf.String(), "\r\n"))
		return nil
	})
	for i := 0; i < 2*usageexport.FlushEvery+7; i++ {
		if err := w.Write([]string{"a", "b"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	want := []int{usageexport.FlushEvery, 2 * usageexport.FlushEvery, 2*usageexport.FlushEvery + 7}
	if len(flushedAt) != len(want) || flushedAt[0] != want[0] || flushedAt[1] != want[1] || flushedAt[2] != want[2] {
		t.Fatalf("flushed after %v records, want %v", flushedAt, want)
	}
}
