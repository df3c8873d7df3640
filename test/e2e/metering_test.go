package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/shopspring/decimal"

	"github.com/ccproxy/ccproxy/test/e2e/internal/fakeanthropic"
	"github.com/ccproxy/ccproxy/test/e2e/internal/fakebedrock"
)

// rates are USD per million tokens: input, output, cache read, cache write
// 5 m, cache write 1 h.
type rates [5]string

// Hand-copied rate card (not read from the database): Anthropic's list
// price for claude-opus-5-5, and Bedrock's for it in us-east-1, where the
// mapping invokes the geographic us. profile at list +10 %.
var (
	planOpus55    = rates{"4", "20", "0.2", "5", "8"}
	bedrockOpus55 = rates{"4.4", "22", "0.22", "5.5", "8.8"}
)

func cost(r rates, in, out, cacheRead, cw5, cw1 int64) decimal.Decimal {
	sum := decimal.Zero
	for i, n := range []int64{in, out, cacheRead, cw5, cw1} {
		sum = sum.Add(decimal.RequireFromString(r[i]).Mul(decimal.NewFromInt(n)))
	}
	return sum.Div(decimal.NewFromInt(1_000_000)).Round(6)
}

// meteredRequest is one request of the mix and what its usage row must say.
type meteredRequest struct {
	provider string // anthropic or bedrock
	stream   bool
	abort    bool // the client goes away after the first bytes
	usage    fakeanthropic.Usage
}

// TestMeteringMix sends 100 mixed requests — Plan and Bedrock, streaming and
// not, some aborted mid-stream by the client — and expects exactly 100
// usage rows with the fakes' token counts and the hand-computed costs.
func TestMeteringMix(t *testing.T) {
	var planSc scenarios
	var bedSc bedrockScenarios
	plan := fakeanthropic.New(t, planSc.handle)
	bg := startBedrockGateway(t, &bedSc, plan)
	session := "meter-" + uuid.NewString()

	var reqs []meteredRequest
	add := func(n int, provider string, stream, abort bool) {
		for range n {
			i := len(reqs)
			reqs = append(reqs, meteredRequest{provider: provider, stream: stream, abort: abort,
				// Distinct input counts identify each request's row.
				usage: fakeanthropic.Usage{Input: 1000 + i, Output: 7 + i, CacheRead: 100 * i, CacheWrite5m: 3 * i, CacheWrite1h: i % 4}})
		}
	}
	add(30, "anthropic", true, false)
	add(20, "anthropic", false, false)
	add(5, "anthropic", true, true)
	add(25, "bedrock", true, false)
	add(15, "bedrock", false, false)
	add(5, "bedrock", true, true)
	if len(reqs) != 100 {
		t.Fatalf("mix has %d requests", len(reqs))
	}

	send := func(r meteredRequest) error {
		gap := time.Duration(0)
		if r.abort {
			gap = 400 * time.Millisecond
		}
		var marker, key string
		if r.provider == "anthropic" {
			key = bg.Key // the demo user: plan_first, no Bedrock credential
			marker = planSc.add(t, func(fakeanthropic.Request) fakeanthropic.Reply {
				if !r.stream {
					return fakeanthropic.Reply{Body: fakeanthropic.Message("claude-opus-5-5", "metered", r.usage),
						Header: http.Header{"Content-Type": {"application/json"}}}
				}
				return fakeanthropic.Reply{Events: fakeanthropic.Stream("claude-opus-5-5", r.usage, fakeanthropic.Block{Text: "metered answer", Chunks: 3}), Gap: gap}
			})
		} else {
			key = bg.east.Key
			u := fakebedrock.Usage{Input: r.usage.Input, Output: r.usage.Output, CacheRead: r.usage.CacheRead,
				CacheWrite5m: r.usage.CacheWrite5m, CacheWrite1h: r.usage.CacheWrite1h}
			marker = bedSc.add(func(fakebedrock.Request) fakebedrock.Reply {
				rep := fakebedrock.Answer("claude-opus-5-5", u, fakebedrock.Block{Text: "metered answer", Chunks: 3})
				rep.Gap = gap
				return rep
			})
		}
		body := fmt.Sprintf(`{"model":"claude-opus-5-5","max_tokens":64,"stream":%t,"messages":[{"role":"user","content":"meter %s"}]}`, r.stream, marker)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, bg.Base+"/ak/"+key+"/v1/messages", strings.NewReader(body))
		req.Header.Set("content-type", "application/json")
		req.Header.Set("anthropic-version", "2023-06-01")
		req.Header.Set("x-api-key", apiKey)
		req.Header.Set("x-claude-code-session-id", session)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			b, _ := io.ReadAll(resp.Body)
			return fmt.Errorf("status %d: %s", resp.StatusCode, b)
		}
		if r.abort {
			// Read until message_start has arrived, then go away.
			var seen bytes.Buffer
			buf := make([]byte, 512)
			for !bytes.Contains(seen.Bytes(), []byte("event: message_start")) {
				n, err := resp.Body.Read(buf)
				seen.Write(buf[:n])
				if err != nil {
					return fmt.Errorf("stream ended before message_start: %v", err)
				}
			}
			cancel()
			return nil
		}
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}

	var wg sync.WaitGroup
	errs := make(chan error, len(reqs))
	work := make(chan meteredRequest)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range work {
				if err := send(r); err != nil {
					errs <- fmt.Errorf("%s stream=%t abort=%t input=%d: %w", r.provider, r.stream, r.abort, r.usage.Input, err)
				}
			}
		}()
	}
	for _, r := range reqs {
		work <- r
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}

	rows := waitMeteredRows(t, bg.gateway, session, len(reqs))
	byInput := map[int64]meteredRow{}
	for _, row := range rows {
		if _, dup := byInput[row.Input]; dup {
			t.Errorf("two rows with input_tokens %d", row.Input)
		}
		byInput[row.Input] = row
	}
	for _, r := range reqs {
		u := r.usage
		row, ok := byInput[int64(u.Input)]
		if !ok {
			t.Errorf("no row for the %s request with input %d", r.provider, u.Input)
			continue
		}
		rt := planOpus55
		if r.provider == "bedrock" {
			rt = bedrockOpus55
		}
		want := meteredRow{Provider: r.provider, Stream: r.stream, Aborted: r.abort, Status: 200,
			Input: int64(u.Input), Output: int64(u.Output), CacheRead: int64(u.CacheRead),
			CacheWrite5m: int64(u.CacheWrite5m), CacheWrite1h: int64(u.CacheWrite1h), PriceFlag: "exact"}
		if r.abort {
			// Only message_start arrived: its input and cache counts, and
			// the placeholder output count it carries.
			want.Output = row.Output
		}
		want.Cost = cost(rt, want.Input, want.Output, want.CacheRead, want.CacheWrite5m, want.CacheWrite1h).String()
		if row != want {
			t.Errorf("row for %s stream=%t abort=%t:\n got %+v\nwant %+v", r.provider, r.stream, r.abort, row, want)
		}
	}
}

type meteredRow struct {
	Provider                                             string
	Stream, Aborted                                      bool
	Status                                               int
	Input, Output, CacheRead, CacheWrite5m, CacheWrite1h int64
	Cost, PriceFlag                                      string
}

// waitMeteredRows waits until session has want rows, then checks that no
// more arrive.
func waitMeteredRows(t *testing.T, g *gateway, session string, want int) []meteredRow {
	t.Helper()
	query := func() []meteredRow {
		rows, err := g.DB.Query(context.Background(), `
			SELECT provider, stream, aborted, status, input_tokens, output_tokens, cache_read_tokens,
			       cache_write_5m_tokens, cache_write_1h_tokens, cost_usd::text, price_flag
			FROM usage_events WHERE session_id = $1`, session)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []meteredRow
		for rows.Next() {
			var r meteredRow
			if err := rows.Scan(&r.Provider, &r.Stream, &r.Aborted, &r.Status, &r.Input, &r.Output, &r.CacheRead,
				&r.CacheWrite5m, &r.CacheWrite1h, &r.Cost, &r.PriceFlag); err != nil {
				t.Fatal(err)
			}
			d, err := decimal.NewFromString(r.Cost)
			if err != nil {
				t.Fatal(err)
			}
			r.Cost = d.String()
			out = append(out, r)
		}
		return out
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		rows := query()
		if len(rows) >= want || time.Now().After(deadline) {
			waitUsageSettled(t, g) // only now is the count final
			rows = query()
			if len(rows) != want {
				t.Fatalf("usage_events has %d rows for the mix, want exactly %d", len(rows), want)
			}
			return rows
		}
		time.Sleep(200 * time.Millisecond)
	}
}
