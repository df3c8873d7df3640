package soak

import (
	"context"
	"fmt"
	"math/rand/v2"
	"syscall"
	"time"
)

// fault is one injected fault and how the installation recovered.
type fault struct {
	n      int
	at     time.Duration // since the soak's traffic began
	target string
	mode   string // kill (SIGKILL) or stop (SIGTERM / fast shutdown)
	down   time.Duration
	// recovery is from the fault until every process is ready again and a
	// Plan request is served end to end; 0 with recovered false when that
	// did not happen within readyTimeout.
	recovery  time.Duration
	recovered bool
	// exits are processes that exited on their own while recovering (and
	// were started again).
	exits []string
}

// chaos kills and restarts one process or server at a time, in a seeded
// random order: every target is hit once in each round of five, at random
// intervals, with a random mode and down time.
type chaos struct {
	env    *soakEnv
	rng    *rand.Rand
	faults []fault
}

var targets = []string{"extproc", "admin", "controlplane", "redis", "postgres"}

func newChaos(env *soakEnv, seed uint64) *chaos {
	return &chaos{env: env, rng: rand.New(rand.NewPCG(seed, 1<<32))}
}

func (c *chaos) run(ctx context.Context) {
	began := c.env.began
	var order []string
	for {
		sleep(ctx, time.Duration(3000+c.rng.IntN(7000))*time.Millisecond)
		if ctx.Err() != nil {
			return
		}
		if len(order) == 0 {
			order = append([]string(nil), targets...)
			c.rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		}
		f := fault{n: len(c.faults) + 1, at: time.Since(began), target: order[0], mode: "kill"}
		order = order[1:]
		if c.rng.IntN(3) == 0 {
			f.mode = "stop"
		}
		f.down = time.Duration(c.rng.IntN(3000)) * time.Millisecond
		c.inject(&f)
		c.faults = append(c.faults, f)
	}
}

// inject breaks f.target, waits f.down, starts it again and waits for the
// whole installation to recover. It runs to completion even when the soak
// ends meanwhile, so the end state is measured on a whole installation.
func (c *chaos) inject(f *fault) {
	env := c.env
	t := env.t
	began := time.Now()
	var comp *component
	switch f.target {
	case "extproc":
		comp = env.extproc
	case "admin":
		comp = env.admin
	case "controlplane":
		comp = env.controlplane
	}
	switch {
	case comp != nil && f.mode == "kill":
		comp.signal(syscall.SIGKILL, 10*time.Second)
	case comp != nil:
		comp.signal(syscall.SIGTERM, 20*time.Second)
	case f.target == "redis" && f.mode == "kill":
		env.rd.Kill(t)
	case f.target == "redis":
		env.rd.Stop(t)
	case f.target == "postgres" && f.mode == "kill":
		env.pg.Kill(t)
	case f.target == "postgres":
		env.pg.Stop(t)
	}
	time.Sleep(f.down)
	ctx := context.Background()
	switch {
	case comp != nil:
		if err := comp.startReady(ctx, binary, readyTimeout); err != nil {
			t.Errorf("fault %d: %v", f.n, err)
			return
		}
	case f.target == "redis":
		env.rd.Start(t)
	case f.target == "postgres":
		env.pg.Start(t)
	}
	deadline := began.Add(readyTimeout)
	for time.Now().Before(deadline) {
		ok := true
		for _, p := range env.comps[:3] {
			if p.isExited() {
				f.exits = append(f.exits, p.name)
				if err := p.startReady(ctx, binary, time.Until(deadline)); err != nil {
					t.Errorf("fault %d: %v", f.n, err)
				}
			}
			if p.ready(ctx) != nil {
				ok = false
			}
		}
		if ok && c.canary(ctx) {
			f.recovery, f.recovered = time.Since(began), true
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("fault %d (%s %s): not recovered within %s", f.n, f.mode, f.target, readyTimeout)
}

// canary sends one Plan request; it is part of the soak's traffic (its
// usage row is checked like any other).
func (c *chaos) canary(ctx context.Context) bool {
	env := c.env
	s := env.reqs.add(planJSON)
	s.key = env.users.plan.Key
	body := fmt.Sprintf(`{"model":%q,"max_tokens":64,"stream":false,"messages":[{"role":"user","content":"canary %s"}]}`, model, s.id)
	s.sentAt = time.Now()
	s.status, s.out = send(ctx, env.gateway+"/ak/"+s.key+"/v1/messages", body, s.id, false)
	s.took = time.Since(s.sentAt)
	return s.out == served
}
