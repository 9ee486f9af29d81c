package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pullship/pullship/bundler/shared/bundle"
	"github.com/pullship/pullship/bundler/shared/cliutil"

	"github.com/spf13/cobra"

	"github.com/pullship/pullship/bundler"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/pullship/pullship/schema"
)

type statusOptions struct {
	repoFlags
	statusRepo  []string
	statusCreds credFlags
	root        string
	asJSON      bool
	watch       bool
	interval    time.Duration
	stale       time.Duration
}

func newStatusCmd(env Env) *cobra.Command {
	var o statusOptions
	cmd := &cobra.Command{
		Use:   "status --repo REPO --root ROOT",
		Short: "Show what every node reports: versions, health, address, cluster view",
		Long: `status reads the newest release (verified against --root) for the node list and
each node's status key, fetches every node's status branch (status/<node>) and
checks each report's signature against that node's key. It prints one line per
node — region, target and applied version, health, overlay address, cluster
members seen, report age, last error — then who sees whom in the cluster.

Flags: STALE (report older than --stale), FORGED (signed by another key),
UNSIGNED, INVALID (malformed, or about another node), MISSING (no branch),
UNKNOWN (a branch for a node the release does not list). The content of
forged, unsigned and invalid reports is not shown; status exits with code 3
when there is any.

With --status-repo, the status branches are read from that repository (where
agents with a status_remote push them) and the release from --repo; a status
repository is trusted no more than the release repository. Repeat it to read
several (one per region, say): a node found in more than one shows its newest
report signed by its status key (the higher sequence, then the later time),
so a report placed in another region's repository counts only if the node
signed it. The --status-* credentials serve every status repository.`,
		Example: `  pullship status --repo https://git.example.com/fleet.git --root root-1.toml
  pullship status --repo /srv/git/fleet.git --root root-1.toml --watch
  pullship status --repo /srv/git/fleet.git --root root-1.toml --json
  pullship status --repo https://git.example.com/fleet.git --status-repo https://git.example.com/fleet-status.git --root root-1.toml
  pullship status --repo https://git.example.com/fleet.git --status-repo https://git.example.com/status-eu.git --status-repo https://git.example.com/status-us.git --root root-1.toml`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runStatus(cmd.Context(), env, o) },
	}
	o.repoFlags.register(cmd)
	f := cmd.Flags()
	f.StringArrayVar(&o.statusRepo, "status-repo", nil, "read the status branches from this repository (the agents' status_remote) instead of --repo; repeat for one per region")
	o.statusCreds.register(cmd, "status-", "the status repository")
	f.StringVar(&o.root, "root", "", "the pinned trust root (root-N.toml) releases are verified against")
	f.BoolVar(&o.asJSON, "json", false, "print JSON (one object per refresh with --watch)")
	f.BoolVar(&o.watch, "watch", false, "refresh until interrupted (in place on a terminal)")
	f.Var(cliutil.DurationFlag(&o.interval, 2*time.Second), "interval", "time between refreshes with --watch")
	f.Var(cliutil.DurationFlag(&o.stale, bundler.DefaultStale), "stale", "a report older than this is flagged STALE (about 3 agent heartbeats)")
	return cmd
}

func runStatus(ctx context.Context, env Env, o statusOptions) error {
	if o.interval < 100*time.Millisecond {
		return cliutil.Usage(fmt.Errorf("--interval %s: at least 100ms", o.interval))
	}
	pinned, err := loadRoot(o.root)
	if err != nil {
		return err
	}
	ctx, stop := cliutil.SignalContext(ctx)
	defer stop()
	r, err := o.open(ctx)
	if err != nil {
		return err
	}
	opts := bundler.FleetOptions{Stale: o.stale}
	for _, url := range o.statusRepo {
		st, err := o.openStatusRepo(ctx, url)
		if err != nil {
			return err
		}
		opts.Status = append(opts.Status, st)
	}
	if !o.watch {
		f, err := r.FleetStatus(ctx, pinned, time.Now().UTC(), opts)
		if err != nil {
			return err
		}
		if err := printFleet(env.Stdout, f, o.asJSON); err != nil {
			return err
		}
		return fleetError(f)
	}
	tty := isTerminal(env.Stdout)
	for {
		f, err := r.FleetStatus(ctx, pinned, time.Now().UTC(), opts)
		if ctx.Err() != nil {
			return nil
		}
		if tty {
			io.WriteString(env.Stdout, "\x1b[H\x1b[2J") // home, clear screen
		}
		if err != nil {
			// Keep watching: the remote may come back.
			fmt.Fprintf(env.Stdout, "%s  error: %s\n", time.Now().UTC().Format(time.RFC3339), bundler.Flatten(err.Error()))
		} else if err := printFleet(env.Stdout, f, o.asJSON); err != nil {
			return err
		}
		if !tty && !o.asJSON {
			fmt.Fprintln(env.Stdout)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(o.interval):
		}
	}
}

// openStatusRepo opens one --status-repo with the --status-* credentials.
func (o *statusOptions) openStatusRepo(ctx context.Context, url string) (*repo.Remote, error) {
	url = absURL(url)
	opts, err := o.statusCreds.options(url)
	if err != nil {
		return nil, err
	}
	r, err := repo.Open(ctx, url, opts)
	if err != nil {
		return nil, fmt.Errorf("status repository: %w", err)
	}
	return r, nil
}

// fleetError refuses a fleet view that holds forged, unsigned or invalid
// reports.
func fleetError(f *bundler.Fleet) error {
	if n := f.Bad(); n > 0 {
		return schema.Refused(fmt.Errorf("status: %d report(s) forged, unsigned or invalid", n))
	}
	return nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func printFleet(w io.Writer, f *bundler.Fleet, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(f)
	}
	fmt.Fprintf(w, "release %d (%s)  at %s  stale after %s\n\n", f.Version, shortID(f.Commit), f.Now.Format(time.RFC3339), f.Stale)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tREGION\tTARGET\tAPPLIED\tHEALTH\tADDRESS\tMEMBERS\tAGE\tFLAG\tLAST ERROR")
	for _, n := range f.Nodes {
		flag := "-"
		if n.State != bundle.ReportOK {
			flag = strings.ToUpper(string(n.State))
		}
		s := n.Status
		if s == nil {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\t%s\t%s\n", n.Node, dash(n.Region), flag, oneLine(n.Problem, 80))
			continue
		}
		applied := fmt.Sprint(s.AppliedVersion)
		if s.AppliedVersion != s.TargetVersion {
			applied += " (!)"
		}
		if s.FailedVersion != 0 {
			applied += fmt.Sprintf(" failed %d", s.FailedVersion)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Node, n.Region, s.TargetVersion, applied,
			health(s), address(s), members(s), n.Age.Round(time.Second), flag, oneLine(s.LastError, 80))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := printServices(w, f); err != nil {
		return err
	}
	printWaves(w, f)
	printMatrix(w, &f.Matrix)
	for _, o := range f.Outvoted {
		fmt.Fprintf(w, "\n%s in %s: %s report %s outvoted by the one shown: %s\n", o.Node, o.Repository,
			strings.ToUpper(string(o.State)), shortID(o.Commit), oneLine(o.Problem, 120))
	}
	return nil
}

// printServices lists, for the nodes of several services, each service's
// image, container state and health.
func printServices(w io.Writer, f *bundler.Fleet) error {
	var tw *tabwriter.Writer
	for _, n := range f.Nodes {
		if n.Status == nil {
			continue
		}
		for _, sv := range n.Status.Services {
			if tw == nil {
				fmt.Fprintln(w, "\nservices")
				tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "  NODE\tSERVICE\tIMAGE\tHEALTH\tOUTPUT")
			}
			h := "fail"
			if sv.Health.OK {
				h = "ok"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s/%s\t%s\n", n.Node, sv.Name, dash(shortImage(sv.Image)), h, sv.Container.State, dash(oneLine(sv.Health.Output, 80)))
		}
	}
	if tw == nil {
		return nil
	}
	return tw.Flush()
}

// shortImage is an image ID's first 12 hex digits.
func shortImage(id string) string {
	if hex, ok := strings.CutPrefix(id, "sha256:"); ok && len(hex) > 12 {
		return hex[:12]
	}
	return id
}

// printWaves shows the rollout of the release wave by wave and why a wave waits.
func printWaves(w io.Writer, f *bundler.Fleet) {
	waves := f.Waves()
	if len(waves) == 0 {
		return
	}
	fmt.Fprintf(w, "\nrollout of release %d\n", f.Version)
	for _, wp := range waves {
		state := "done"
		if wp.Waiting != "" {
			state = oneLine(wp.Waiting, 100)
		}
		fmt.Fprintf(w, "  wave %d (%s): %d/%d  %s\n", wp.Wave, strings.Join(wp.Nodes, ", "), wp.Done, len(wp.Nodes), state)
	}
}

func health(s *schema.Status) string {
	h := "fail"
	if s.Health.OK {
		h = "ok"
	}
	return h + "/" + s.Container.State
}

func address(s *schema.Status) string {
	a := dash(s.Network.Address)
	if s.Network.Driver == schema.DriverNone {
		return a
	}
	if s.Network.Attached {
		return a + " attached"
	}
	return a + " DETACHED"
}

func members(s *schema.Status) string {
	running := 0
	for _, m := range s.Cluster.Members {
		if m.Running {
			running++
		}
	}
	out := fmt.Sprintf("%d/%d", running, len(s.Cluster.Members))
	if !s.Cluster.Joined && len(s.Cluster.Members) > 0 {
		out += " not joined"
	}
	return out
}

func printMatrix(w io.Writer, m *bundler.Matrix) {
	if len(m.Rows) == 0 || len(m.Columns) == 0 {
		return
	}
	fmt.Fprintln(w, "\nwho sees whom (row: reporting node; +: running, x: down, .: not seen)")
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	fmt.Fprint(tw, "\t")
	for _, c := range m.Columns {
		fmt.Fprintf(tw, "%s\t", oneLine(c, 24))
	}
	fmt.Fprintln(tw)
	for i, r := range m.Rows {
		fmt.Fprintf(tw, "%s\t", r)
		for _, c := range m.Cells[i] {
			mark := "."
			switch c {
			case bundler.SeenRunning:
				mark = "+"
			case bundler.SeenDown:
				mark = "x"
			}
			fmt.Fprintf(tw, "%s\t", mark)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	if m.Truncated {
		fmt.Fprintf(w, "(more than %d members; the rest are not shown)\n", bundler.MaxMatrixColumns)
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine flattens report text (written by nodes, so untrusted) into one
// printable line of at most n runes: no terminal escapes reach the screen.
func oneLine(s string, n int) string {
	var b strings.Builder
	i := 0
	for _, r := range s {
		if i == n {
			b.WriteString("…")
			break
		}
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			r = ' '
		}
		b.WriteRune(r)
		i++
	}
	return strings.TrimSpace(b.String())
}
