package cluster

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// fakeVMQ answers show and join like vmq-admin over a scripted membership.
type fakeVMQ struct {
	members  []string          // current view, self first
	joinable map[string]bool   // peers whose join succeeds
	showErr  int               // fail this many show calls first
	calls    []string          // every command run
	joinOut  map[string]string // output override per peer
}

func (f *fakeVMQ) Exec(ctx context.Context, argv []string, timeout time.Duration) ([]byte, int, error) {
	if timeout <= 0 {
		return nil, 0, errors.New("no timeout")
	}
	f.calls = append(f.calls, strings.Join(argv, " "))
	switch {
	case argv[1] == "show":
		if f.showErr > 0 {
			f.showErr--
			return []byte("Node 'VerneMQ@10.0.0.1' not responding to pings.\n"), 1, nil
		}
		var b strings.Builder
		b.WriteString(`{"table":[`)
		for i, m := range f.members {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"Node":%q,"Running":true}`, m)
		}
		b.WriteString(`],"type":"table"}`)
		return []byte(b.String()), 0, nil
	case argv[1] == "join":
		peer := strings.TrimPrefix(argv[2], "discovery-node=")
		if out, ok := f.joinOut[peer]; ok {
			return []byte(out), 0, nil
		}
		if !f.joinable[peer] {
			return []byte("Couldn't join cluster due to not_reachable\n"), 1, nil
		}
		f.members = append(f.members, peer)
		return []byte("Done\n"), 0, nil
	}
	return nil, 127, nil
}

func spec(peers ...string) Spec {
	s := Spec{Show: []string{"vmq-admin", "show"}, Format: FormatJSON, Self: "VerneMQ@10.0.0.1"}
	for _, p := range peers {
		s.Join = append(s.Join, []string{"vmq-admin", "join", "discovery-node=" + p})
	}
	return s
}

// fakeClock records the waits instead of sleeping.
type fakeClock struct{ waits []time.Duration }

func (c *fakeClock) backoff(rounds int) Backoff {
	return Backoff{
		Initial: time.Second, Max: 4 * time.Second, Rounds: rounds,
		Sleep: func(ctx context.Context, d time.Duration) error { c.waits = append(c.waits, d); return ctx.Err() },
		Rand:  func() float64 { return 0.5 },
	}
}

func TestCheck(t *testing.T) {
	for _, tt := range []struct {
		members []string
		joined  bool
	}{
		{[]string{"VerneMQ@10.0.0.1"}, false},
		{[]string{"VerneMQ@10.0.0.1", "VerneMQ@10.0.0.2"}, true},
		{[]string{"VerneMQ@10.0.0.2", "VerneMQ@10.0.0.3"}, false}, // self missing
	} {
		v, err := Check(context.Background(), &fakeVMQ{members: tt.members}, spec())
		if err != nil {
			t.Fatal(err)
		}
		if v.Joined != tt.joined || len(v.Members) != len(tt.members) {
			t.Fatalf("%v: got %+v, want joined=%v", tt.members, v, tt.joined)
		}
	}
	_, err := Check(context.Background(), &fakeVMQ{showErr: 1}, spec())
	if err == nil || !strings.Contains(err.Error(), "exited 1") || !strings.Contains(err.Error(), "not responding") {
		t.Fatalf("failing show: %v", err)
	}
}

func TestEnsureAlreadyJoined(t *testing.T) {
	f := &fakeVMQ{members: []string{"VerneMQ@10.0.0.1", "VerneMQ@10.0.0.2"}}
	v, err := Ensure(context.Background(), f, spec("VerneMQ@10.0.0.2"), (&fakeClock{}).backoff(3))
	if err != nil || !v.Joined {
		t.Fatalf("got %+v, %v", v, err)
	}
	if len(f.calls) != 1 {
		t.Fatalf("ran %v, want only show", f.calls)
	}
}

func TestEnsureJoinsFirstReachablePeer(t *testing.T) {
	f := &fakeVMQ{members: []string{"VerneMQ@10.0.0.1"}, joinable: map[string]bool{"VerneMQ@10.0.0.3": true}}
	v, err := Ensure(context.Background(), f, spec("VerneMQ@10.0.0.2", "VerneMQ@10.0.0.3", "VerneMQ@10.0.0.4"), (&fakeClock{}).backoff(3))
	if err != nil || !v.Joined {
		t.Fatalf("got %+v, %v", v, err)
	}
	want := []string{
		"vmq-admin show",
		"vmq-admin join discovery-node=VerneMQ@10.0.0.2",
		"vmq-admin join discovery-node=VerneMQ@10.0.0.3",
		"vmq-admin show",
	}
	if !reflect.DeepEqual(f.calls, want) {
		t.Fatalf("ran %q, want %q", f.calls, want)
	}
}

func TestEnsureBacksOffThenFails(t *testing.T) {
	f := &fakeVMQ{members: []string{"VerneMQ@10.0.0.1"}, joinOut: map[string]string{"VerneMQ@10.0.0.3": "something else\n"}}
	c := &fakeClock{}
	_, err := Ensure(context.Background(), f, spec("VerneMQ@10.0.0.2", "VerneMQ@10.0.0.3"), c.backoff(5))
	if !errors.Is(err, ErrNotJoined) {
		t.Fatalf("got %v, want ErrNotJoined", err)
	}
	if !strings.Contains(err.Error(), "without printing Done") {
		t.Fatalf("error %q does not carry the last failure", err)
	}
	// d = 1s, 2s, 4s, 4s (capped); jitter 0.5 → 3/4 of d.
	want := []time.Duration{750 * time.Millisecond, 1500 * time.Millisecond, 3 * time.Second, 3 * time.Second}
	if !reflect.DeepEqual(c.waits, want) {
		t.Fatalf("waits %v, want %v", c.waits, want)
	}
}

func TestEnsureRetriesShowAndNoJoinIsOK(t *testing.T) {
	f := &fakeVMQ{members: []string{"VerneMQ@10.0.0.1"}, showErr: 2}
	c := &fakeClock{}
	v, err := Ensure(context.Background(), f, spec(), c.backoff(5))
	if err != nil || v.Joined || len(v.Members) != 1 {
		t.Fatalf("single node without peers: got %+v, %v", v, err)
	}
	if len(c.waits) != 2 {
		t.Fatalf("waited %v, want 2 waits for 2 failed shows", c.waits)
	}
}

func TestEnsureCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	f := &fakeVMQ{members: []string{"VerneMQ@10.0.0.1"}}
	b := Backoff{Rounds: 100, Sleep: func(ctx context.Context, d time.Duration) error { cancel(); return ctx.Err() }}
	_, err := Ensure(ctx, f, spec("VerneMQ@10.0.0.2"), b)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if len(f.calls) != 2 {
		t.Fatalf("ran %q after cancel", f.calls)
	}
}

func TestBackoffRealSleepHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := (Backoff{}).sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
	for i := 0; i < 20; i++ {
		d := (Backoff{}).delay(i)
		if d < 500*time.Millisecond || d > 30*time.Second {
			t.Fatalf("delay(%d) = %v out of bounds", i, d)
		}
	}
}
