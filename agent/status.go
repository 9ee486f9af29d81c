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
// pushes the queue to the first remote that takes it (the status remote
// when there is one, else the release remotes in order). Failures are
// logged: reports stay queued until a remote accepts them.
func (a *Agent) report(ctx context.Context, r runningRelease, target int64, ns *state.Node, lastErr error) {
	rn := r.node
	st := a.observe(ctx, r, target, ns, lastErr)
	last, ok := a.lastReport[rn.Name]
	if ok && report.IsHeartbeat(last.status, st) && a.now().Sub(last.at) < a.cfg.Heartbeat.Duration {
		return
	}
	rep := a.reporters[rn.Name]
	if err := rep.Commit(st); err != nil {
		a.log.Error("status report", "node", rn.Name, "err", err)
		return
	}
	a.lastReport[rn.Name] = reported{at: a.now(), status: st}
	var pushers []report.Pusher
	for _, url := range a.cfg.StatusURLs() {
		if rem, err := a.remote(ctx, url); err == nil {
			pushers = append(pushers, rem)
		}
	}
	if err := rep.Flush(ctx, pushers...); err != nil {
		a.log.Warn("status queued", "node", rn.Name, "err", err)
	}
}

// observe reads what the node really runs, as its running release r
// describes it (services, health checks, files, address), whatever release
// is the target.
func (a *Agent) observe(ctx context.Context, r runningRelease, target int64, ns *state.Node, lastErr error) *schema.Status {
	rn := r.node
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
	for _, f := range rn.Files {
		// Never through a link: a planted one would publish the digest of
		// any host file.
		sum, _ := a.files().SHA256(f.Target)
		if f.Encrypted {
			// Never the plaintext's digest (a reader could test guesses of
			// a weak secret against it): the ciphertext's, when it matches.
			sum = ""
			if a.fileMatches(r.commit, rn, f) {
				sum = f.SHA256
			}
		}
		st.Files = append(st.Files, schema.StatusFile{Target: f.Target, SHA256: sum})
	}
	units := rn.Units()
	primary := primaryUnit(units)
	var unhealthy []string
	for k := range units {
		u := &units[k]
		var sv schema.StatusService
		sv.Name = u.Name
		cs, found, err := a.eng.Inspect(ctx, u.Container.Name)
		switch {
		case err != nil:
			sv.Container.State = "missing"
			errs = append(errs, err.Error())
		case !found:
			sv.Container.State = "missing"
		default:
			sv.Container.ID, sv.Image = cs.ID, cs.ImageID
			sv.Container.State = cs.Status
			if !slices.Contains(schema.ContainerStates, cs.Status) {
				sv.Container.State = "dead"
			}
			if !cs.StartedAt.IsZero() {
				t := cs.StartedAt.UTC().Truncate(time.Second)
				sv.Container.StartedAt = &t
			}
		}
		if found && cs.Running {
			herr := a.check(ctx, u.Container.Name, u.Container.Health, 10*time.Second)
			sv.Health.OK = herr == nil
			sv.Health.CheckedAt = &now
			if herr != nil {
				sv.Health.Output = bound(herr.Error(), schema.MaxServiceOutputLen)
				if u.Name != "" {
					unhealthy = append(unhealthy, "service "+u.Name+": "+herr.Error())
				} else {
					unhealthy = append(unhealthy, herr.Error())
				}
			}
		} else if u.Name != "" {
			unhealthy = append(unhealthy, "service "+u.Name+": container "+sv.Container.State)
		}
		if k != primary {
			if len(rn.Services) > 0 {
				st.Services = append(st.Services, sv)
			}
			continue
		}
		st.Container, st.Image = sv.Container, sv.Image
		if found && cs.Running {
			if at, err := a.driver(rn.Network).Check(ctx, u.Container.Name); err == nil {
				st.Network.Attached = rn.Network.Driver == schema.DriverNone || rn.Network.Driver == "" || hasAddress(at, rn.Network.Address)
			} else {
				errs = append(errs, err.Error())
			}
			st.Health.CheckedAt = &now
			if u.Container.Cluster != nil {
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
		if len(rn.Services) > 0 {
			st.Services = append(st.Services, sv)
		}
	}
	// The node is healthy when every service is.
	st.Health.OK = st.Health.CheckedAt != nil && len(unhealthy) == 0
	if len(unhealthy) > 0 {
		st.Health.Output = bound(strings.Join(unhealthy, "; "), schema.MaxOutputLen)
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

// primaryUnit is the index of the service whose container a status report
// names at its top level: the clustered one, else the first attached, else
// the first.
func primaryUnit(units []schema.NodeService) int {
	for k := range units {
		if units[k].Container.Cluster != nil {
			return k
		}
	}
	for k := range units {
		if units[k].Attach {
			return k
		}
	}
	return 0
}

// Status writes, for every node of this host, the report it would send now
// (status.toml), observed from the host, without applying anything.
func (a *Agent) Status(ctx context.Context, w io.Writer) error {
	st, err := a.st.Load()
	if err != nil {
		return err
	}
	for _, n := range a.cfg.Nodes {
		r, ok := a.current(n.Name, st.Nodes[n.Name])
		if !ok {
			fmt.Fprintf(w, "# node %s: no release accepted yet\n", n.Name)
			continue
		}
		s := a.observe(ctx, r, st.Version, st.Nodes[n.Name], nil)
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
