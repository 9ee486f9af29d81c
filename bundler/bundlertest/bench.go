package bundlertest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// BenchRow is one row of a `make bench` table: a measurement of pullship
// next to its baseline from the same run.
type BenchRow struct{ Scenario, Metric, Ours, Base, Ratio, Target, Met string }

// PrintBench writes rows as an aligned table; ours heads pullship's column.
func PrintBench(out io.Writer, ours string, rows []BenchRow) {
	head := BenchRow{"scenario", "metric", ours, "baseline", "ratio", "target", "met?"}
	cells := func(r BenchRow) []string {
		return []string{r.Scenario, r.Metric, r.Ours, r.Base, r.Ratio, r.Target, r.Met}
	}
	width := make([]int, 7)
	for _, r := range append([]BenchRow{head}, rows...) {
		for i, c := range cells(r) {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	w := bufio.NewWriter(out)
	defer w.Flush()
	line := func(cs []string, pad, sep string) {
		for i, c := range cs {
			c += strings.Repeat(pad, width[i]-len([]rune(c)))
			if i < 6 {
				c += sep
			}
			fmt.Fprint(w, c)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
	line(cells(head), " ", " | ")
	line(make([]string, 7), "-", "-|-")
	for _, r := range rows {
		line(cells(r), " ", " | ")
	}
}

// Met is a table's "met?" cell.
func Met(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}

// Secs, KiB (a count of KiB, as /usr/bin/time reports RSS), MiB and KB
// format a table's numbers.
func Secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

// KiB formats k KiB as MiB.
func KiB(k int64) string { return fmt.Sprintf("%.1f MiB", float64(k)/1024) }

// MiB formats n bytes as MiB.
func MiB(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// KB formats n bytes as KB, or MiB from 1 MiB up.
func KB(n int64) string {
	if n >= 1<<20 {
		return MiB(n)
	}
	return fmt.Sprintf("%.1f KB", float64(n)/1000)
}

// LoadAvg is the one-minute load average, to print next to wall times.
func LoadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(data))[0]
}

// BenchEnv is the environment of the git and pullship processes a bench
// runs: git's stock defaults (no user or system config), a fixed identity.
func BenchEnv(home string) []string {
	env := []string{"HOME=" + home, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=bench", "GIT_AUTHOR_EMAIL=bench@example.com",
		"GIT_COMMITTER_NAME=bench", "GIT_COMMITTER_EMAIL=bench@example.com", "LC_ALL=C"}
	for _, k := range []string{"PATH", "TMPDIR", "GOTOOLCHAIN", "DOCKER_HOST", "DOCKER_CONFIG"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// Row makes a BenchRow.
func Row(scenario, metric, ours, base, ratio, target, met string) BenchRow {
	return BenchRow{scenario, metric, ours, base, ratio, target, met}
}

// Measure is one command run under GNU time by [Timed].
type Measure struct {
	Start time.Time
	Wall  time.Duration
	CPU   time.Duration // user + system, of the process and its children
	RSS   int64         // peak resident set size, KiB
	Out   string        // stdout and stderr
}

var (
	maxRSSRE = regexp.MustCompile(`Maximum resident set size \(kbytes\): (\d+)`)
	userRE   = regexp.MustCompile(`User time \(seconds\): ([0-9.]+)`)
	sysRE    = regexp.MustCompile(`System time \(seconds\): ([0-9.]+)`)
)

// Timed runs name args in dir with env under /usr/bin/time -v (its report
// goes to a temporary file in tmp): wall time measured around it, CPU time
// and peak RSS as GNU time reports them. An exit code other than 0 or one
// in codes is an error; the Measure then still holds the output.
func Timed(tmp, dir string, env []string, codes []int, name string, args ...string) (Measure, error) {
	f, err := os.CreateTemp(tmp, "time-*")
	if err != nil {
		return Measure{}, err
	}
	f.Close()
	defer os.Remove(f.Name())
	cmd := exec.Command("/usr/bin/time", append([]string{"-v", "-o", f.Name(), name}, args...)...)
	cmd.Dir = dir
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	m := Measure{Start: time.Now()}
	err = cmd.Run()
	m.Wall = time.Since(m.Start)
	m.Out = out.String()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code, err = ee.ExitCode(), nil
	}
	if err != nil || (code != 0 && !slices.Contains(codes, code)) {
		return m, fmt.Errorf("%s %s: exit %d %v\n%s", name, strings.Join(args, " "), code, err, m.Out)
	}
	tv, err := os.ReadFile(f.Name())
	if err != nil {
		return m, err
	}
	sm := maxRSSRE.FindSubmatch(tv)
	if sm == nil {
		return m, fmt.Errorf("no peak RSS in /usr/bin/time output of %s:\n%s", name, tv)
	}
	m.RSS, _ = strconv.ParseInt(string(sm[1]), 10, 64)
	for _, re := range []*regexp.Regexp{userRE, sysRE} {
		if sm := re.FindSubmatch(tv); sm != nil {
			f, _ := strconv.ParseFloat(string(sm[1]), 64)
			m.CPU += time.Duration(f * float64(time.Second))
		}
	}
	return m, nil
}
