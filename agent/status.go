package agent

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/pullship/pullship/agent/report"
	"github.com/pullship/pullship/agent/state"
	"github.com/pullship/pullship/schema"
)

// reported is the last report of a node, to decide when the next is due.
type reported struct {
	at     time.Time
	status *schema.Status
}

// openReporters loads every node's status key and makes its reporter.
func (a *Agent) openReporters() error {
	a.reporters = map[string]*report.Reporter{}
	a.lastReport = map[string]reported{}
	for _, n := range a.cfg.Nodes {
		data, err := os.ReadFile(n.Key)
		if err != nil {
			return fmt.Errorf("node %s: status key: %w (create it with pullship-agent init)", n.Name, err)
		}
		signer, _, err := schema.LoadPrivateKey(n.Key, data, nil)
		if err != nil {
			return fmt.Errorf("node %s: status key: %w (the agent runs unattended: its key is not encrypted)", n.Name, err)
		}
		r, err := report.New(n.Name, signer, a.objects)
		if err != nil {
			return err
		}
		a.reporters[n.Name] = r
	}
	return nil
}

// report writes node's status when it changed or a heartbeat is due, and
// pushes the queue to the first remote that takes it. Failures are logged:
// reports stay queued until a remote accepts them.
func (a *Agent) report(ctx context.Context, rn *schema.ReleaseNode, target int64, ns *state.Node, lastErr error) {
	st := a.observe(ctx, rn, target, ns, lastErr)
	last, ok := a.lastReport[rn.Name]
	if ok && report.IsHeartbeat(last.status, st) && a.now().Sub(last.at) < a.cfg.Heartbeat.Duration {
		return
	}
	r := a.reporters[rn.Name]
	if err := r.Commit(st); err != nil {
		a.log.Error("status report", "node", rn.Name, "err", err)
		return
	}
	a.lastReport[rn.Name] = reported{at: a.now(), status: st}
	var pushers []report.Pusher
	for _, url := range a.cfg.Remotes {
		if rem, err := a.remote(ctx, url); err == nil {
			pushers = append(pushers, rem)
		}
	}
	if err := r.Flush(ctx, pushers...); err != nil {
		a.log.Warn("status queued", "node", rn.Name, "err", err)
	}
}

// observe reads what the node really runs.
func (a *Agent) observe(ctx context.Context, rn *schema.ReleaseNode, target int64, ns *state.Node, lastErr error) *schema.Status {
	now := a.now().UTC().Truncate(time.Second)
	st := &schema.Status{Node: rn.Name, Region: rn.Region, Time: now, TargetVersion: target,
		Network: schema.StatusNetwork{Driver: rn.Network.Driver, Address: rn.Network.Address}}
	if st.Network.Driver == "" {
		st.Network.Driver = schema.DriverNone
	}
	if ns != nil {
		st.AppliedVersion, st.FailedVersion, st.AppliedManifest = ns.Applied, ns.Failed, ns.ManifestSHA256
	}
	var errs []string
	if lastErr != nil {
		errs = append(errs, lastErr.Error())
	} else if ns != nil && ns.Failed >= target && ns.FailedError != "" {
		errs = append(errs, ns.FailedError)
	}
	commit, _ := a.objects.Ref(acceptedRef)
	for _, f := range rn.Files {
		// Never through a link: a planted one would publish the digest of
		// any host file.
		sum, _ := a.files().SHA256(f.Target)
		if f.Encrypted {
			// Never the plaintext's digest (a reader could test guesses of
			// a weak secret against it): the ciphertext's, when it matches.
			sum = ""
			if a.fileMatches(commit, rn, f) {
				sum = f.SHA256
			}
		}
		st.Files = append(st.Files, schema.StatusFile{Target: f.Target, SHA256: sum})
	}
	if rn.Container == nil {
		// A node of services is not applied by this agent (oneService).
		st.Container.State = "missing"
		errs = append(errs, oneService(rn).Error())
		st.LastError = bound(strings.Join(errs, "; "), schema.MaxStringLen)
		return st
	}
	cs, found, err := a.eng.Inspect(ctx, rn.Container.Name)
	switch {
	case err != nil:
		st.Container.State = "missing"
		errs = append(errs, err.Error())
	case !found:
		st.Container.State = "missing"
	default:
		st.Container.ID, st.Image = cs.ID, cs.ImageID
		st.Container.State = cs.Status
		if !slices.Contains(schema.ContainerStates, cs.Status) {
			st.Container.State = "dead"
		}
		if !cs.StartedAt.IsZero() {
			t := cs.StartedAt.UTC().Truncate(time.Second)
			st.Container.StartedAt = &t
		}
	}
	if found && cs.Running {
		if at, err := a.driver(rn.Network).Check(ctx, rn.Container.Name); err == nil {
			st.Network.Attached = rn.Network.Driver == schema.DriverNone || rn.Network.Driver == "" || hasAddress(at, rn.Network.Address)
		} else {
			errs = append(errs, err.Error())
		}
		herr := a.check(ctx, rn.Container.Name, rn.Container.Health, 10*time.Second)
		st.Health.OK = herr == nil
		st.Health.CheckedAt = &now
		if herr != nil {
			st.Health.Output = bound(herr.Error(), schema.MaxOutputLen)
		}
		if rn.Container.Cluster != nil {
			v, err := a.clusterView(ctx, rn)
			if err != nil {
				errs = append(errs, err.Error())
			}
			st.Cluster.Joined = v.Joined
			for _, m := range v.Members {
				st.Cluster.Members = append(st.Cluster.Members, schema.StatusMember{Node: m.Node, Running: m.Running})
			}
		}
	}
	st.LastError = bound(strings.Join(errs, "; "), schema.MaxStringLen)
	return st
}

func bound(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n-3], "") + "..."
}

// Status writes, for every node of this host, the report it would send now
// (status.toml), observed from the host, without applying anything.
func (a *Agent) Status(ctx context.Context, w io.Writer) error {
	st, err := a.st.Load()
	if err != nil {
		return err
	}
	a.loadManaged()
	for _, n := range a.cfg.Nodes {
		rn := a.managed.byNode(n.Name)
		if rn == nil {
			fmt.Fprintf(w, "# node %s: no release accepted yet\n", n.Name)
			continue
		}
		s := a.observe(ctx, rn, st.Version, st.Nodes[n.Name], nil)
		s.Sequence = 1 // numbered when committed; Encode wants a valid report
		if r := a.reporters[n.Name]; r != nil {
			if prev, err := r.Last(); err == nil && prev != nil {
				s.Sequence = prev.Sequence + 1
			}
		}
		data, err := s.Encode()
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "# node %s\n%s\n", n.Name, data)
	}
	return nil
}
