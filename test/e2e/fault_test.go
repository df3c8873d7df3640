package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ccproxy/ccproxy/internal/testenv/procs"
	"github.com/ccproxy/ccproxy/test/e2e/internal/fakeanthropic"
)

// TestUsageSurvivesPostgresOutage: with the gateway on Postgres and Redis
// servers of the test's own, Postgres is stopped while 50 requests run and
// started again; every request's usage row lands, exactly once.
func TestUsageSurvivesPostgresOutage(t *testing.T) {
	pg := procs.StartPostgres(t)
	rd := procs.StartRedis(t)
	var sc scenarios
	plan := fakeanthropic.New(t, sc.handle)
	g := startDevWith(t, devConfig{AnthropicURL: plan.URL, DatabaseURL: pg.CreateDB(t, "ccproxy"), RedisURL: rd.URL()})
	session := "outage-" + uuid.NewString()

	send := func(i int) error {
		u := fakeanthropic.Usage{Input: 100 + i, Output: 10 + i}
		marker := sc.add(t, func(fakeanthropic.Request) fakeanthropic.Reply {
			return fakeanthropic.Reply{Events: fakeanthropic.Stream("claude-opus-5-5", u, fakeanthropic.Block{Text: "ok"})}
		})
		req, _ := http.NewRequest(http.MethodPost, g.BaseURL+"/v1/messages",
			strings.NewReader(`{"model":"claude-opus-5-5","max_tokens":8,"stream":true,"messages":[{"role":"user","content":"`+marker+`"}]}`))
		req.Header.Set("content-type", "application/json")
		req.Header.Set("x-api-key", apiKey)
		req.Header.Set("x-claude-code-session-id", session)
		status, _, body := do(t, req)
		if status != 200 || !strings.Contains(string(body), "event: message_stop") {
			return fmt.Errorf("request %d: %d %.200s", i, status, body)
		}
		return nil
	}
	// The access key is resolved (and cached) while Postgres is up.
	if err := send(0); err != nil {
		t.Fatal(err)
	}
	pg.Stop(t)
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := 1; i <= 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := send(i); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	time.Sleep(2 * time.Second) // the ingester keeps failing and retrying meanwhile
	pg.Start(t)

	deadline := time.Now().Add(60 * time.Second)
	for {
		var n, distinct int
		err := g.DB.QueryRow(context.Background(),
			`SELECT count(*), count(DISTINCT input_tokens) FROM usage_events WHERE session_id = $1`, session).Scan(&n, &distinct)
		if err == nil && n >= 51 {
			waitUsageSettled(t, g) // only now is the count final
			if err := g.DB.QueryRow(context.Background(),
				`SELECT count(*), count(DISTINCT input_tokens) FROM usage_events WHERE session_id = $1`, session).Scan(&n, &distinct); err != nil {
				t.Fatal(err)
			}
			if n != 51 || distinct != 51 {
				t.Fatalf("%d usage rows (%d distinct requests) after the outage; want exactly 51", n, distinct)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("usage rows after the outage: %d (err %v); want 51", n, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
