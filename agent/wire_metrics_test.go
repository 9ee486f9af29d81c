package agent_test

import (
	"log/slog"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/pullship/pullship/agent"
	"github.com/pullship/pullship/bundler/shared/repo/gittest"
)

// TestWireMetrics: the agent exports what each remote moved over the
// network; over git:// the counts are the bytes a proxy in front of git
// daemon forwarded each way, and an idle poll adds one request.
func TestWireMetrics(t *testing.T) {
	h := newHost(t)
	srv := gittest.Daemon(t, h.env.Dir)
	proxy, err := gittest.NewCutProxy(srv.URL+"/releases.git", 0)
	must(t, err)
	defer proxy.Close()
	h.setRemotes(proxy.URL)
	h.release(h.image("a"), "version = 1\n", ping)

	reg := prometheus.NewRegistry()
	m := agent.NewMetrics(reg)
	wire := func() map[string]float64 {
		got := map[string]float64{}
		families, err := reg.Gather()
		must(t, err)
		for _, f := range families {
			for _, mm := range f.GetMetric() {
				if label(mm, "remote") == proxy.URL {
					got[f.GetName()] = mm.GetCounter().GetValue()
				}
			}
		}
		return got
	}
	// One agent, as run keeps it: its remotes live from pass to pass.
	a := openAgent(t, h.cfg, agent.Options{Engine: h.eng, Metrics: m})
	defer a.Close()
	if out, err := a.Once(t.Context()); err != nil || out != agent.Converged {
		t.Fatalf("once: %v %v", out, err)
	}
	got := wire()
	up, down := proxy.Bytes()
	if got["pullship_remote_received_bytes_total"] != float64(down) || got["pullship_remote_sent_bytes_total"] != float64(up) ||
		got["pullship_remote_requests_total"] < 2 || got["pullship_remote_stalls_total"] != 0 {
		t.Fatalf("after the first pass: %v; the proxy forwarded %d up, %d down", got, up, down)
	}
	before := got["pullship_remote_requests_total"]
	if out, err := a.Once(t.Context()); err != nil || out != agent.Nothing {
		t.Fatalf("second once: %v %v", out, err)
	}
	got = wire()
	up2, down2 := proxy.Bytes()
	t.Logf("idle pass: %v requests, %d bytes up, %d bytes down", got["pullship_remote_requests_total"]-before, up2-up, down2-down)
	if got["pullship_remote_received_bytes_total"] != float64(down2) || got["pullship_remote_requests_total"] < before+1 {
		t.Fatalf("after the idle pass: %v; the proxy forwarded %d down", got, down2)
	}
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// TestResumeMetrics: a remote that cuts every image fetch (a proxy in
// front of git daemon) is retried, each retry a resume counted for it and
// logged; the next remote continues the fetch, a resume of its own, and
// the image arrives. /metrics shows both remotes' resumes.
func TestResumeMetrics(t *testing.T) {
	h := newHost(t)
	direct := gittest.Daemon(t, h.env.Dir).URL + "/releases.git"
	proxy, err := gittest.NewCutProxy(direct, 2) // the history passes, the image is cut
	must(t, err)
	defer proxy.Close()
	h.setRemotes(proxy.URL, direct)
	h.release(h.image("a"), "version = 1\n", ping)

	reg := prometheus.NewRegistry()
	a := openAgent(t, h.cfg, agent.Options{Engine: h.eng, Metrics: agent.NewMetrics(reg), Logger: slog.New(slog.NewTextHandler(&h.log, nil))})
	defer a.Close()
	if out, err := a.Once(t.Context()); err != nil || out != agent.Converged {
		t.Fatalf("once: %v %v\n%s", out, err, h.log.String())
	}

	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	resumes := map[string]int{}
	for line := range strings.Lines(rec.Body.String()) {
		for _, u := range []string{proxy.URL, direct} {
			if v, ok := strings.CutPrefix(line, `pullship_remote_resumes_total{remote="`+u+`"} `); ok {
				n, err := strconv.Atoi(strings.TrimSpace(v))
				must(t, err)
				resumes[u] = n
			}
		}
	}
	logged := map[string]int{}
	for line := range strings.Lines(h.log.String()) {
		if !strings.Contains(line, `msg="image fetch cut; resuming"`) || !strings.Contains(line, "segment=1/") ||
			!strings.Contains(line, "kept_bytes=") || !strings.Contains(line, "connection cut") {
			continue
		}
		for _, u := range []string{proxy.URL, direct} {
			if strings.Contains(line, " remote="+u+" ") {
				logged[u]++
			}
		}
	}
	t.Logf("resumes in /metrics: %v; logged: %v", resumes, logged)
	if resumes[proxy.URL] < 1 || resumes[direct] != 1 {
		t.Errorf("resumes in /metrics: %v; want at least one for the cutting remote, one for the next\n%s", resumes, rec.Body.String())
	}
	if logged[proxy.URL] != resumes[proxy.URL] || logged[direct] != resumes[direct] {
		t.Errorf("resumes logged: %v, counted %v\n%s", logged, resumes, h.log.String())
	}
}
