package engine_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pullship/pullship/agent/engine"
	"github.com/pullship/pullship/agent/engine/enginetest"
	"github.com/pullship/pullship/bundler/shared/repo/gittest"
)

var (
	pingOnce sync.Once
	pingBin  []byte
)

func pingsrv(t *testing.T) []byte {
	pingOnce.Do(func() { pingBin = enginetest.Pingsrv(t) })
	if pingBin == nil {
		t.Fatal("pingsrv build failed earlier")
	}
	return pingBin
}

func newDocker(t *testing.T) *engine.Docker {
	t.Helper()
	enginetest.RequireDocker(t)
	d, err := engine.NewDocker()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func uniq(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return "pullship-test-" + prefix + "-" + hex.EncodeToString(b)
}

func docker(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func cleanupImage(t *testing.T, id string) {
	t.Cleanup(func() { exec.Command("docker", "rmi", "-f", id).Run() })
}

// load streams img into the engine through a pipe, as the agent does.
func load(ctx context.Context, d *engine.Docker, img enginetest.Image, wantID string) (id string, err error) {
	return loadSized(ctx, d, img, wantID, nil)
}

// loadSized is load, with the sizes of the tarball's files given ahead.
func loadSized(ctx context.Context, d *engine.Docker, img enginetest.Image, wantID string, sizes map[string]int64) (id string, err error) {
	pr, pw := io.Pipe()
	ids := make(chan string, 1)
	go func() {
		id, err := enginetest.WriteImage(pw, img)
		pw.CloseWithError(err)
		ids <- id
	}()
	if wantID == "" {
		// Learn the ID without loading: the writer is deterministic.
		id, err := enginetest.WriteImage(io.Discard, img)
		if err != nil {
			return "", err
		}
		wantID = id
	}
	err = d.LoadImage(ctx, pr, wantID, engine.LoadOptions{Sizes: sizes})
	pr.CloseWithError(errors.New("load returned"))
	return <-ids, err
}

func loadPing(t *testing.T, d *engine.Docker, variant string) string {
	t.Helper()
	img := enginetest.PingImage(pingsrv(t), variant)
	id, err := enginetest.WriteImage(io.Discard, img)
	if err != nil {
		t.Fatal(err)
	}
	cleanupImage(t, id)
	if _, err := load(t.Context(), d, img, id); err != nil {
		t.Fatalf("load: %v", err)
	}
	return id
}

func TestLoadImage(t *testing.T) {
	d := newDocker(t)
	ctx := t.Context()
	img := enginetest.PingImage(pingsrv(t), uniq("load"))
	img.RepoTags = []string{uniq("tag") + ":v1"}
	id, _ := enginetest.WriteImage(io.Discard, img)
	cleanupImage(t, id)
	if ok, err := d.HasImage(ctx, id); err != nil || ok {
		t.Fatalf("HasImage before load = %v, %v; want false", ok, err)
	}
	if _, err := load(ctx, d, img, id); err != nil {
		t.Fatalf("LoadImage: %v", err)
	}
	if ok, err := d.HasImage(ctx, id); err != nil || !ok {
		t.Fatalf("HasImage after load = %v, %v; want true", ok, err)
	}
	if tags := docker(t, "image", "inspect", "--format", "{{json .RepoTags}}", id); tags != "[]" {
		t.Errorf("loaded image has tags %s, want none", tags)
	}
	// Loading it again is fine.
	if _, err := load(ctx, d, img, id); err != nil {
		t.Fatalf("second LoadImage: %v", err)
	}
	if err := d.RemoveImage(ctx, id); err != nil {
		t.Fatal(err)
	}
	if ok, _ := d.HasImage(ctx, id); ok {
		t.Fatal("image still present after RemoveImage")
	}
	if err := d.RemoveImage(ctx, id); err != nil {
		t.Fatalf("RemoveImage of a missing image: %v", err)
	}
	if _, err := d.HasImage(ctx, "latest"); err == nil {
		t.Fatal("HasImage accepted a tag")
	}
}

func TestLoadImageMismatch(t *testing.T) {
	d := newDocker(t)
	ctx := t.Context()
	img := enginetest.PingImage(pingsrv(t), uniq("mismatch"))
	realID, _ := enginetest.WriteImage(io.Discard, img)
	cleanupImage(t, realID)
	want := "sha256:" + strings.Repeat("ab", 32)
	_, err := load(ctx, d, img, want)
	var mm *engine.ImageMismatchError
	if !errors.As(err, &mm) {
		t.Fatalf("LoadImage with wrong ID: %v, want *ImageMismatchError", err)
	}
	if mm.Want != want || mm.Got != realID {
		t.Errorf("mismatch error = %+v, want Want %s Got %s", mm, want, realID)
	}
	if ok, err := d.HasImage(ctx, realID); err != nil || ok {
		t.Fatalf("image loaded despite mismatch (HasImage = %v, %v)", ok, err)
	}
}

func TestLoadImageEngineError(t *testing.T) {
	d := newDocker(t)
	ctx := t.Context()

	// The engine reads the whole tarball, then rejects the layer inside its
	// progress stream, with HTTP status 200.
	img := enginetest.PingImage(pingsrv(t), uniq("baddiff"))
	img.BadDiffID = true
	id, _ := enginetest.WriteImage(io.Discard, img)
	cleanupImage(t, id)
	_, err := load(ctx, d, img, id)
	if err == nil || !strings.Contains(err.Error(), "engine: ") {
		t.Fatalf("load of a bad-diff_id image: %v, want the engine's error", err)
	}
	t.Logf("bad diff_id: %v", err)
	if ok, _ := d.HasImage(ctx, id); ok {
		t.Fatal("bad image present after failed load")
	}

	// A truncated tarball never reaches the engine complete.
	var buf bytes.Buffer
	img = enginetest.PingImage(pingsrv(t), uniq("trunc"))
	id, _ = enginetest.WriteImage(&buf, img)
	cleanupImage(t, id)
	err = d.LoadImage(ctx, bytes.NewReader(buf.Bytes()[:buf.Len()/2]), id, engine.LoadOptions{})
	if err == nil {
		t.Fatal("truncated tarball loaded")
	}
	t.Logf("truncated: %v", err)
	if ok, _ := d.HasImage(ctx, id); ok {
		t.Fatal("image present after truncated load")
	}
}

func TestLoadImageKeepsTags(t *testing.T) {
	d := newDocker(t)
	ctx := t.Context()
	orig := loadPing(t, d, uniq("orig"))
	tag := uniq("tag") + ":x"
	docker(t, "tag", orig, tag)
	t.Cleanup(func() { exec.Command("docker", "rmi", tag).Run() })

	img := enginetest.PingImage(pingsrv(t), uniq("intruder"))
	img.RepoTags = []string{tag}
	id, _ := enginetest.WriteImage(io.Discard, img)
	cleanupImage(t, id)
	if _, err := load(ctx, d, img, id); err != nil {
		t.Fatal(err)
	}
	if got := docker(t, "image", "inspect", "--format", "{{.Id}}", tag); got != orig {
		t.Fatalf("tag %s moved to %s, want it on %s", tag, got, orig)
	}
	if tags := docker(t, "image", "inspect", "--format", "{{json .RepoTags}}", id); tags != "[]" {
		t.Errorf("loaded image has tags %s, want none", tags)
	}
}

func runPing(t *testing.T, d *engine.Docker, id string, spec engine.ContainerSpec) string {
	t.Helper()
	if spec.Name == "" {
		spec.Name = uniq("c")
	}
	spec.Image = id
	t.Cleanup(func() {
		exec.Command("docker", "rm", "-f", spec.Name).Run()
		exec.Command("docker", "rm", "-f", spec.Name+engine.PrevSuffix).Run()
	})
	if _, err := d.Run(t.Context(), spec); err != nil {
		t.Fatalf("Run: %v", err)
	}
	return spec.Name
}

func TestContainerLifecycle(t *testing.T) {
	d := newDocker(t)
	ctx := t.Context()
	id := loadPing(t, d, uniq("life"))
	name := runPing(t, d, id, engine.ContainerSpec{
		Labels:        map[string]string{engine.LabelNode: "n1", engine.LabelVersion: "7"},
		Ports:         []string{"127.0.0.1::1883/tcp"},
		Env:           []string{"A=b"},
		RestartPolicy: "unless-stopped",
		Hostname:      "node1",
	})
	st, ok, err := d.Inspect(ctx, name)
	if err != nil || !ok {
		t.Fatalf("Inspect = %v, %v", ok, err)
	}
	if !st.Running || st.Status != "running" || st.ImageID != id || st.Name != name ||
		st.Labels[engine.LabelVersion] != "7" || st.StartedAt.IsZero() {
		t.Fatalf("state after Run = %+v", st)
	}
	if _, err := d.Run(ctx, engine.ContainerSpec{Name: name, Image: id}); err == nil {
		t.Fatal("Run with a taken name succeeded")
	}
	if _, err := d.Run(ctx, engine.ContainerSpec{Name: uniq("c"), Image: id, RestartPolicy: "sometimes"}); err == nil {
		t.Fatal("Run accepted a bad restart policy")
	}
	if inUse, err := d.ImagesInUse(ctx); err != nil || !contains(inUse, id) {
		t.Fatalf("ImagesInUse = %v, %v; want it to hold %s", inUse, err, id)
	}

	res, err := d.Exec(ctx, name, []string{"/pingsrv", "ping"}, 5*time.Second)
	if err != nil || string(res.Output) != "pong\n" || res.ExitCode != 0 {
		t.Fatalf("exec ping = %q %d %v", res.Output, res.ExitCode, err)
	}
	res, err = d.Exec(ctx, name, []string{"/pingsrv", "exit", "3"}, 5*time.Second)
	if err != nil || res.ExitCode != 3 || !strings.Contains(string(res.Output), "exiting with 3") {
		t.Fatalf("exec exit 3 = %q %d %v", res.Output, res.ExitCode, err)
	}
	res, err = d.Exec(ctx, name, []string{"/pingsrv", "spew", "1000000"}, 10*time.Second)
	if err != nil || len(res.Output) != engine.MaxExecOutput || !res.Truncated {
		t.Fatalf("exec spew = %d bytes truncated=%v %v", len(res.Output), res.Truncated, err)
	}
	start := time.Now()
	if _, err = d.Exec(ctx, name, []string{"/pingsrv", "sleep"}, 500*time.Millisecond); err == nil {
		t.Fatal("exec sleep did not time out")
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("exec timeout took %v", el)
	}
	res, err = d.Exec(ctx, name, []string{"/nonexistent"}, 5*time.Second)
	t.Logf("exec of a missing binary: exit %d, %q, %v", res.ExitCode, res.Output, err)
	if err == nil && res.ExitCode == 0 {
		t.Fatal("exec of a missing binary succeeded")
	}

	if err := d.Restart(ctx, name, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	st2, _, _ := d.Inspect(ctx, name)
	if !st2.Running || !st2.StartedAt.After(st.StartedAt) {
		t.Fatalf("after Restart: %+v (was started %v)", st2, st.StartedAt)
	}

	// Upgrade with rollback: keep the old container aside, run a new one,
	// then undo.
	prev := name + engine.PrevSuffix
	if err := d.Rename(ctx, name, prev); err != nil {
		t.Fatal(err)
	}
	if err := d.Stop(ctx, prev, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := d.Inspect(ctx, name); ok {
		t.Fatal("old name still present after Rename")
	}
	if _, err := d.Run(ctx, engine.ContainerSpec{Name: name, Image: id, Labels: map[string]string{engine.LabelNode: "n1"}}); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove(ctx, name, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := d.Rename(ctx, prev, name); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx, name); err != nil {
		t.Fatal(err)
	}
	st3, ok, _ := d.Inspect(ctx, name)
	if !ok || !st3.Running || st3.ID != st.ID {
		t.Fatalf("after rollback: %+v, want the original container %s running", st3, st.ID)
	}

	if err := d.Remove(ctx, name, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := d.Inspect(ctx, name); ok || err != nil {
		t.Fatalf("Inspect after Remove = %v, %v", ok, err)
	}
	if err := d.Remove(ctx, name, time.Second); err != nil {
		t.Fatalf("Remove of a missing container: %v", err)
	}
	if err := d.RemoveImage(ctx, id); err != nil {
		t.Fatalf("RemoveImage after containers gone: %v", err)
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestEventsStartAfterRestart(t *testing.T) {
	d := newDocker(t)
	id := loadPing(t, d, uniq("events"))
	name := runPing(t, d, id, engine.ContainerSpec{Labels: map[string]string{engine.LabelNode: "n-events"}})
	// A container without the label must not show up.
	other := runPing(t, d, id, engine.ContainerSpec{})

	ctx, cancel := context.WithCancel(t.Context())
	events, errs := d.Events(ctx)
	// Let the subscription reach the engine: restart the unlabelled one first
	// (also checks the filter) then the labelled one.
	if err := d.Restart(t.Context(), other, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := d.Restart(t.Context(), name, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	deadline := time.After(time.Second)
	for got := false; !got; {
		select {
		case ev := <-events:
			if ev.Name == other {
				t.Fatalf("event for unlabelled container: %+v", ev)
			}
			if ev.Name == name && ev.Action == "start" {
				got = true
				t.Logf("start event %v after Restart returned", time.Since(restarted))
			}
		case err := <-errs:
			t.Fatalf("events stream: %v", err)
		case <-deadline:
			t.Fatal("no start event within 1s of restart")
		}
	}
	cancel()
	for range events {
	}
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Fatalf("error after cancel = %v, want context.Canceled", err)
	}
}

func TestNetworkFixedIP(t *testing.T) {
	d := newDocker(t)
	ctx := t.Context()
	net := uniq("net")
	// Registered first so that it runs after the container is gone.
	t.Cleanup(func() {
		if out, err := exec.Command("docker", "network", "rm", net).CombinedOutput(); err != nil {
			t.Errorf("remove network %s: %v\n%s", net, err, out)
		}
	})
	id := loadPing(t, d, uniq("net"))
	name := runPing(t, d, id, engine.ContainerSpec{})
	b := make([]byte, 1)
	rand.Read(b)
	subnet := fmt.Sprintf("10.99.%d.0/24", b[0])
	ip := fmt.Sprintf("10.99.%d.10", b[0])

	if err := d.EnsureNetwork(ctx, net, subnet); err != nil {
		t.Fatal(err)
	}
	if err := d.EnsureNetwork(ctx, net, subnet); err != nil {
		t.Fatalf("EnsureNetwork on an existing network: %v", err)
	}
	if err := d.EnsureNetwork(ctx, net, "10.98.0.0/24"); err == nil {
		t.Fatal("EnsureNetwork accepted a network with another subnet")
	}
	if _, ok, err := d.Connected(ctx, name, net); ok || err != nil {
		t.Fatalf("Connected before connect = %v, %v", ok, err)
	}
	if err := d.ConnectNetwork(ctx, net, name, ip); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := d.Connected(ctx, name, net); got != ip || !ok || err != nil {
		t.Fatalf("Connected = %q %v %v, want %s", got, ok, err, ip)
	}
	if err := d.Restart(ctx, name, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := d.Connected(ctx, name, net); got != ip || !ok || err != nil {
		t.Fatalf("Connected after restart = %q %v %v, want %s", got, ok, err, ip)
	}
	if err := d.ConnectNetwork(ctx, net, name, ip); err != nil {
		t.Fatalf("ConnectNetwork again: %v", err)
	}
	ip2 := strings.TrimSuffix(ip, ".10") + ".11"
	if err := d.ConnectNetwork(ctx, net, name, ip2); err != nil {
		t.Fatalf("ConnectNetwork with a new address: %v", err)
	}
	if got, _, _ := d.Connected(ctx, name, net); got != ip2 {
		t.Fatalf("address after reconnect = %s, want %s", got, ip2)
	}
}

// TestServiceNetwork: a network ensured without a subnet is created with
// the engine's, accepted as it is afterwards, and a container run on it is
// on it from its start.
func TestServiceNetwork(t *testing.T) {
	d := newDocker(t)
	ctx := t.Context()
	net := uniq("svcnet")
	t.Cleanup(func() {
		if out, err := exec.Command("docker", "network", "rm", net).CombinedOutput(); err != nil {
			t.Errorf("remove network %s: %v\n%s", net, err, out)
		}
	})
	for range 2 {
		if err := d.EnsureNetwork(ctx, net, ""); err != nil {
			t.Fatal(err)
		}
	}
	if got := docker(t, "network", "inspect", "-f", "{{.Driver}} {{index .Labels \"pullship\"}}", net); got != "bridge 1" {
		t.Fatalf("network %s: driver and label %q", net, got)
	}
	id := loadPing(t, d, uniq("svcnet"))
	name := runPing(t, d, id, engine.ContainerSpec{Network: net})
	if ip, ok, err := d.Connected(ctx, name, net); ip == "" || !ok || err != nil {
		t.Fatalf("Connected to the network the container was created on = %q %v %v", ip, ok, err)
	}
	if ip, ok, err := d.Connected(ctx, name, "bridge"); ok || err != nil {
		t.Fatalf("a container created on %s is on the default bridge too: %q %v", net, ip, err)
	}
}

// TestLoadImageMemory loads a ~200 MiB image and reports the process's peak
// heap and RSS: LoadImage must stream.
func TestLoadImageMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("loads a 200 MiB image")
	}
	d := newDocker(t)
	img := enginetest.Image{RandomSize: 200 << 20, Seed: uint64(time.Now().UnixNano()), Labels: map[string]string{"pullship.test": uniq("mem")}}
	id, err := enginetest.WriteImage(io.Discard, img)
	if err != nil {
		t.Fatal(err)
	}
	cleanupImage(t, id)
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	stop := make(chan struct{})
	peak := make(chan uint64)
	go func() {
		var max uint64
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			max = maxU(max, m.HeapInuse)
			select {
			case <-stop:
				peak <- max
				return
			case <-tick.C:
			}
		}
	}()
	start := time.Now()
	if _, err := load(t.Context(), d, img, id); err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	close(stop)
	p := <-peak
	status, _ := os.ReadFile("/proc/self/status")
	var hwm string
	for _, l := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			hwm = strings.TrimSpace(strings.TrimPrefix(l, "VmHWM:"))
		}
	}
	t.Logf("load 200 MiB: %v; heap in use: base %.1f MiB, peak %.1f MiB; process peak RSS (VmHWM) %s",
		el, float64(base.HeapInuse)/(1<<20), float64(p)/(1<<20), hwm)
	if p > base.HeapInuse+32<<20 {
		t.Fatalf("heap grew by %.1f MiB during load; LoadImage does not stream", float64(p-base.HeapInuse)/(1<<20))
	}
}

func maxU(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

// loadEvents returns the IDs of the images the engine reported loading (or
// importing) between since and now, in order: image id itself, and the
// partial images of loads of id (other tests load images at the same time).
func loadEvents(t *testing.T, since time.Time, id string) (partial []string, loaded int) {
	t.Helper()
	out := docker(t, "events", "--since", since.Format(time.RFC3339Nano), "--until", time.Now().Add(time.Second).Format(time.RFC3339Nano),
		"--filter", "type=image", "--filter", "event=load", "--filter", "event=import", "--format", "{{.ID}} {{index .Actor.Attributes \""+engine.LabelPartial+"\"}}")
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) == 2 && f[1] == id:
			if loaded > 0 {
				t.Fatalf("partial image %s loaded after %s", f[0], id)
			}
			partial = append(partial, f[0])
		case len(f) >= 1 && f[0] == id:
			loaded++
		}
	}
	return partial, loaded
}

// partialImages lists the partial images of loads of image id left on the
// engine.
func partialImages(t *testing.T, id string) string {
	t.Helper()
	return docker(t, "images", "-a", "-q", "--filter", "label="+engine.LabelPartial+"="+id)
}

// stagedImage is an image of five layers in the order pullship's bundler
// gives (manifest and config first): pingsrv, 3 MiB of random data, and
// three small ones.
func stagedImage(t *testing.T, variant string) enginetest.Image {
	img := enginetest.PingImage(pingsrv(t), uniq(variant))
	// A first layer of its own: one the engine holds (another test's
	// image) would go into a part instead of an import.
	img.Files = append(img.Files, enginetest.File{Name: "variant", Mode: 0o644, Data: []byte(uniq(variant))})
	img.RandomSize, img.Seed = 3<<20, uint64(time.Now().UnixNano())
	small := func(name string) []enginetest.File {
		return []enginetest.File{{Name: "etc", Dir: true, Mode: 0o755}, {Name: "etc/" + name, Mode: 0o644, Data: []byte(name)}}
	}
	img.More = [][]enginetest.File{small("a"), small("b"), small("top")}
	img.PlanFirst = true
	return img
}

// TestLoadImageStaged: an image whose manifest and config come before its
// layers (the order pullship's bundler gives) is loaded part by part: the
// first layer imported, then a partial image per layer or run of small
// layers, then the image itself, whose load registers the last layer; the
// partial images are gone afterwards and the image is whole.
func TestLoadImageStaged(t *testing.T) {
	d := newDocker(t)
	ctx := t.Context()
	img := stagedImage(t, "staged")
	// Parts close past 2 MiB: the random layer has a part of its own, the
	// two small ones after it share one, the last comes with the image.
	engine.SetPartBytes(t, 2<<20)
	id, _ := enginetest.WriteImage(io.Discard, img)
	cleanupImage(t, id)
	// A partial image an agent killed midway left behind (its config has
	// no creation time: older than any load), to be removed by this load.
	stale := enginetest.Image{Files: []enginetest.File{{Name: "x", Mode: 0o644, Data: []byte("x")}},
		Labels: map[string]string{engine.LabelPartial: uniq("killed")}}
	staleID, _ := enginetest.WriteImage(io.Discard, stale)
	cleanupImage(t, staleID)
	tag := enginetest.Load(t, uniq("stale")+":1", stale)
	docker(t, "rmi", tag) // untagged, like a partial image
	since := time.Now()
	if _, err := load(ctx, d, img, id); err != nil {
		t.Fatalf("LoadImage: %v", err)
	}
	if out, err := exec.Command("docker", "image", "inspect", staleID).CombinedOutput(); err == nil {
		t.Fatalf("stale partial image %s not removed: %s", staleID, out)
	}
	partial, loaded := loadEvents(t, since, id)
	if len(partial) != 3 || loaded != 1 {
		t.Fatalf("load events: partial images %q and %d of %s, want three partial images (the first layer, the random one, the two small ones) then the image", partial, loaded, id)
	}
	stagedWhole(t, id, partial)
}

// stagedWhole checks what a staged load of stagedImage id left: no partial
// image (those the load reported included), the image whole and running
// (its layers survived the partial images' removal).
func stagedWhole(t *testing.T, id string, partial []string) {
	t.Helper()
	if p := partialImages(t, id); p != "" {
		t.Fatalf("partial images left: %s", p)
	}
	for _, e := range partial {
		if out, err := exec.Command("docker", "image", "inspect", e).CombinedOutput(); err == nil {
			t.Fatalf("partial image %s still present: %s", e, out)
		}
	}
	if layers := docker(t, "image", "inspect", "--format", "{{len .RootFS.Layers}}", id); layers != "5" {
		t.Fatalf("loaded image has %s layers, want 5", layers)
	}
	name := uniq("staged")
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", name).Run() })
	if out := docker(t, "run", "--name", name, id, "ping"); out != "pong" {
		t.Fatalf("staged image's container printed %q, want pong", out)
	}
}

// TestLoadImageStagedHeldBase: an update of an image whose lower layers the
// engine holds (from the previous version) imports nothing: the held layers
// go in no load, the changed one after them in a part of its own; the image
// comes out whole.
func TestLoadImageStagedHeldBase(t *testing.T) {
	d := newDocker(t)
	ctx := t.Context()
	engine.SetPartBytes(t, 2<<20)
	v1 := stagedImage(t, "held-v1")
	id1, _ := enginetest.WriteImage(io.Discard, v1)
	cleanupImage(t, id1)
	since := time.Now()
	if _, err := load(ctx, d, v1, id1); err != nil {
		t.Fatalf("LoadImage v1: %v", err)
	}
	if n := importEvents(t, since, id1); n != 1 {
		t.Fatalf("v1: %d imports, want its first layer's", n)
	}
	v2 := v1
	v2.Labels = map[string]string{"pullship.test": uniq("held-v2")}
	v2.More = [][]enginetest.File{{{Name: "etc", Dir: true, Mode: 0o755}, {Name: "etc/v2", Mode: 0o644, Data: []byte("v2")}}, v1.More[2]}
	id2, _ := enginetest.WriteImage(io.Discard, v2)
	cleanupImage(t, id2)
	since = time.Now()
	if _, err := load(ctx, d, v2, id2); err != nil {
		t.Fatalf("LoadImage v2: %v", err)
	}
	if n := importEvents(t, since, id2); n != 0 {
		t.Fatalf("v2: %d imports, want none (the engine holds its first layer)", n)
	}
	partial, loaded := loadEvents(t, since, id2)
	if len(partial) == 0 || loaded != 1 {
		t.Fatalf("v2 load events: partial images %q and %d of %s, want partial images then the image", partial, loaded, id2)
	}
	if p := partialImages(t, id2); p != "" {
		t.Fatalf("partial images left: %s", p)
	}
	if layers := docker(t, "image", "inspect", "--format", "{{len .RootFS.Layers}}", id2); layers != "4" {
		t.Fatalf("loaded image has %s layers, want 4", layers)
	}
	name := uniq("held")
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", name).Run() })
	if out := docker(t, "run", "--name", name, id2, "ping"); out != "pong" {
		t.Fatalf("v2's container printed %q, want pong", out)
	}
}

// importEvents counts the engine's imports, since then, of partial images
// of loads of image id.
func importEvents(t *testing.T, since time.Time, id string) int {
	t.Helper()
	out := docker(t, "events", "--since", since.Format(time.RFC3339Nano), "--until", time.Now().Add(time.Second).Format(time.RFC3339Nano),
		"--filter", "type=image", "--filter", "event=import", "--filter", "label="+engine.LabelPartial+"="+id, "--format", "{{.ID}}")
	return len(strings.Fields(out))
}

// TestLoadImageStagedSizes: with the sizes of its layers known ahead, the
// image of TestLoadImageStaged keeps its small last layers in its own load
// (less than a part's worth follows the random one): the first layer is
// imported, the image's load registers the other four.
func TestLoadImageStagedSizes(t *testing.T) {
	d := newDocker(t)
	img := stagedImage(t, "staged-sizes")
	engine.SetPartBytes(t, 2<<20)
	var tarball bytes.Buffer
	id, err := enginetest.WriteImage(&tarball, img)
	if err != nil {
		t.Fatal(err)
	}
	cleanupImage(t, id)
	since := time.Now()
	if _, err := loadSized(t.Context(), d, img, id, entrySizes(t, tarball.Bytes())); err != nil {
		t.Fatalf("LoadImage: %v", err)
	}
	partial, loaded := loadEvents(t, since, id)
	if len(partial) != 1 || loaded != 1 {
		t.Fatalf("load events: partial images %q and %d of %s, want one partial image (the first layer) then the image", partial, loaded, id)
	}
	stagedWhole(t, id, partial)
}

// TestLoadImageStagedRefused: a staged load that fails leaves no image, no
// partial image and no layer behind: a layer whose content is not its
// diff_id, a stream cut after the first layer, a config that is not the
// signed one (refused before any layer is sent).
func TestLoadImageStagedRefused(t *testing.T) {
	d := newDocker(t)
	ctx := t.Context()

	img := enginetest.PingImage(pingsrv(t), uniq("staged-bad"))
	img.RandomSize, img.Seed = 1<<20, uint64(time.Now().UnixNano())
	img.PlanFirst, img.BadDiffID = true, true
	badID, _ := enginetest.WriteImage(io.Discard, img)
	cleanupImage(t, badID)
	if _, err := load(ctx, d, img, badID); err == nil || !strings.Contains(err.Error(), "load layer 1") {
		t.Fatalf("staged load of a bad diff_id: %v, want the first layer's load to fail", err)
	} else {
		t.Logf("bad diff_id: %v", err)
	}

	img.BadDiffID = false
	var buf bytes.Buffer
	id, _ := enginetest.WriteImage(&buf, img)
	cleanupImage(t, id)
	cut := bytes.Index(buf.Bytes(), []byte("layer1/layer.tar\x00")) // the second layer's tar header
	if cut < 0 {
		t.Fatal("no second layer in the test image")
	}
	since := time.Now()
	if err := d.LoadImage(ctx, bytes.NewReader(buf.Bytes()[:cut+100]), id, engine.LoadOptions{}); err == nil {
		t.Fatal("truncated staged stream loaded")
	} else {
		t.Logf("truncated: %v", err)
	}
	if partial, loaded := loadEvents(t, since, id); len(partial) > 1 || loaded > 0 {
		t.Fatalf("load events: partial images %q and %d of the image, for a stream cut after its first layer", partial, loaded)
	}

	since = time.Now()
	wrong := "sha256:" + strings.Repeat("cd", 32)
	_, err := load(ctx, d, img, wrong)
	var mm *engine.ImageMismatchError
	if !errors.As(err, &mm) || mm.Got != id {
		t.Fatalf("staged load with the wrong ID: %v, want *ImageMismatchError", err)
	}
	if partial, _ := loadEvents(t, since, wrong); len(partial) != 0 {
		t.Fatalf("partial images %q loaded: a layer was sent before the config was checked", partial)
	}
	if _, loaded := loadEvents(t, since, id); loaded != 0 {
		t.Fatal("the image was loaded under the wrong ID")
	}

	// Nothing left: the images these loads named are absent, no partial
	// image of theirs remains.
	for _, want := range []string{badID, id, wrong} {
		if out, err := exec.Command("docker", "image", "inspect", want).CombinedOutput(); err == nil {
			t.Fatalf("image %s present after a refused load: %s", want, out)
		}
		if p := partialImages(t, want); p != "" {
			t.Fatalf("partial images left: %s", p)
		}
	}
}

// countingDocker is a client of the engine through a proxy on a unix
// socket of its own (gittest.Proxy); sent reports the bytes the client has
// sent the engine so far. A byte is counted before it is passed on: once
// the engine answered a request, its bytes are in the count.
func countingDocker(t *testing.T) (d *engine.Docker, sent func() int64) {
	t.Helper()
	enginetest.RequireDocker(t)
	network, addr := "unix", "/var/run/docker.sock"
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		scheme, rest, ok := strings.Cut(h, "://")
		if !ok || (scheme != "unix" && scheme != "tcp") {
			t.Fatalf("DOCKER_HOST %q: the counting proxy speaks to unix:// and tcp:// engines only", h)
		}
		network, addr = scheme, rest
	}
	sock := filepath.Join(t.TempDir(), "engine.sock")
	p, err := gittest.NewProxyOn("unix", sock, network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	t.Setenv("DOCKER_HOST", "unix://"+sock)
	return newDocker(t), func() int64 { up, _ := p.Bytes(); return up }
}

// heldImages returns two versions of an image of three layers in the order
// pullship's bundler gives: a base of its own (pingsrv), 4 MiB of random
// data, and a small top layer, which alone differs between them.
func heldImages(t *testing.T, variant string) (v1, v2 enginetest.Image) {
	v1 = enginetest.PingImage(pingsrv(t), uniq(variant+"-v1"))
	v1.Files = append(v1.Files, enginetest.File{Name: "variant", Mode: 0o644, Data: []byte(uniq(variant))})
	v1.RandomSize, v1.Seed = 4<<20, uint64(time.Now().UnixNano())
	v1.More = [][]enginetest.File{{{Name: "etc", Dir: true, Mode: 0o755}, {Name: "etc/v1", Mode: 0o644, Data: []byte("v1")}}}
	v1.PlanFirst = true
	v2 = v1
	v2.Labels = map[string]string{"pullship.test": uniq(variant + "-v2")}
	v2.More = [][]enginetest.File{{{Name: "etc", Dir: true, Mode: 0o755}, {Name: "etc/v2", Mode: 0o644, Data: []byte("v2")}}}
	return v1, v2
}

// loadOmitting is load, with the writer told which layers to leave out,
// as the agent's rebuild is; it returns the files it left out.
func loadOmitting(ctx context.Context, d *engine.Docker, img enginetest.Image, wantID string) ([]string, error) {
	var tarball bytes.Buffer
	if _, err := enginetest.WriteImage(&tarball, img); err != nil {
		return nil, err
	}
	omit := engine.NewOmit()
	pr, pw := io.Pipe()
	skipped := make(chan []string, 1)
	go func() {
		s, err := writeSkipping(pw, tarball.Bytes(), omit.Skip)
		pw.CloseWithError(err)
		skipped <- s
	}()
	err := d.LoadImage(ctx, pr, wantID, engine.LoadOptions{Omit: omit})
	pr.CloseWithError(errors.New("load returned"))
	return <-skipped, err
}

// loaded returns the ID and the layers of an image the engine holds.
func loaded(t *testing.T, id string) (string, string) {
	t.Helper()
	return docker(t, "image", "inspect", "--format", "{{.ID}}", id), docker(t, "image", "inspect", "--format", "{{json .RootFS.Layers}}", id)
}

// diffIDs returns the diff IDs img's config lists, as JSON.
func diffIDs(t *testing.T, img enginetest.Image) string {
	t.Helper()
	var buf bytes.Buffer
	id, err := enginetest.WriteImage(&buf, img)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		RootFS struct {
			DiffIDs json.RawMessage `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(tarEntries(t, buf.Bytes())[strings.TrimPrefix(id, "sha256:")+".json"], &cfg); err != nil {
		t.Fatal(err)
	}
	return string(cfg.RootFS.DiffIDs)
}

// TestLoadImageHeldLayers: an update of an image whose lower layers the
// engine holds (the previous version's) sends the engine only the new
// layer: the held ones, 6 MiB here, go in no load, and the tarball's
// writer is told to leave them out. The image loaded is the one a full
// load gives: same ID, same layers, the signed config's.
func TestLoadImageHeldLayers(t *testing.T) {
	d, sent := countingDocker(t)
	ctx := t.Context()
	v1, v2 := heldImages(t, "held-layers")
	id1, _ := enginetest.WriteImage(io.Discard, v1)
	id2, _ := enginetest.WriteImage(io.Discard, v2)
	cleanupImage(t, id1)
	cleanupImage(t, id2)
	held := int64(len(v1.Files[0].Data)) + v1.RandomSize

	n := sent()
	if _, err := load(ctx, d, v1, id1); err != nil {
		t.Fatalf("LoadImage v1: %v", err)
	}
	if full := sent() - n; full < held {
		t.Fatalf("v1's load sent the engine %d bytes, less than its lower layers' %d", full, held)
	}
	n = sent()
	skipped, err := loadOmitting(ctx, d, v2, id2)
	if err != nil {
		t.Fatalf("LoadImage v2: %v", err)
	}
	if want := []string{"layer0/layer.tar", "layer1/layer.tar"}; !slices.Equal(skipped, want) {
		t.Fatalf("the writer of v2 left out %q, want %q", skipped, want)
	}
	update := sent() - n
	t.Logf("update: %d bytes sent to the engine, %d held", update, held)
	if update > 256<<10 {
		t.Fatalf("v2's load sent the engine %d bytes: more than its new layer and the API calls (the held layers are %d bytes)", update, held)
	}
	gotID, gotLayers := loaded(t, id2)
	if want := diffIDs(t, v2); gotID != id2 || gotLayers != want {
		t.Fatalf("v2 loaded as %s with layers %s, want %s with %s", gotID, gotLayers, id2, want)
	}

	// A full load of v2 on an engine that holds none of its layers gives
	// the same image.
	docker(t, "rmi", id1, id2)
	n = sent()
	if _, err := load(ctx, d, v2, id2); err != nil {
		t.Fatalf("full LoadImage v2: %v", err)
	}
	if full := sent() - n; full < held {
		t.Fatalf("v2's full load sent the engine %d bytes, less than its lower layers' %d", full, held)
	}
	if fullID, fullLayers := loaded(t, id2); fullID != gotID || fullLayers != gotLayers {
		t.Fatalf("full load: %s with layers %s, the update %s with %s", fullID, fullLayers, gotID, gotLayers)
	}
	name := uniq("held-layers")
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", name).Run() })
	if out := docker(t, "run", "--name", name, id2, "ping"); out != "pong" {
		t.Fatalf("v2's container printed %q, want pong", out)
	}
}

// TestLoadImageHeldLayersGone: when the layers a load leaves out are gone
// by the time the engine looks for them (the image that held them removed
// after the load found them), the load fails, says so, and leaves no
// image; the next load of the image sends every layer, even though the
// engine holds them again, and loads it; the one after that, the image
// removed, leaves them out again.
func TestLoadImageHeldLayersGone(t *testing.T) {
	d, sent := countingDocker(t)
	ctx := t.Context()
	v1, v2 := heldImages(t, "held-gone")
	id1, _ := enginetest.WriteImage(io.Discard, v1)
	id2, _ := enginetest.WriteImage(io.Discard, v2)
	cleanupImage(t, id1)
	cleanupImage(t, id2)
	held := int64(len(v1.Files[0].Data)) + v1.RandomSize
	if _, err := load(ctx, d, v1, id1); err != nil {
		t.Fatalf("LoadImage v1: %v", err)
	}

	removed := false
	engine.SetHeldHook(t, func(want string, n int) {
		if want != id2 || removed {
			return
		}
		removed = true
		if out, err := exec.Command("docker", "rmi", id1).CombinedOutput(); err != nil {
			t.Errorf("remove v1 while v2 loads: %v\n%s", err, out)
		}
	})
	_, err := load(ctx, d, v2, id2)
	if !removed {
		t.Fatal("the load of v2 did not find v1's layers held")
	}
	if err == nil || !strings.Contains(err.Error(), "the next load of the image sends them") {
		t.Fatalf("load of v2 without the layers it left out: %v, want a failure that says the next load sends them", err)
	}
	t.Logf("layers gone: %v", err)
	if ok, _ := d.HasImage(ctx, id2); ok {
		t.Fatal("v2 present after a failed load")
	}

	if _, err := load(ctx, d, v1, id1); err != nil {
		t.Fatalf("reload v1: %v", err)
	}
	n := sent()
	if skipped, err := loadOmitting(ctx, d, v2, id2); err != nil || skipped != nil {
		t.Fatalf("retry of v2: %v; the writer left out %q", err, skipped)
	}
	if retry := sent() - n; retry < held {
		t.Fatalf("the retry sent the engine %d bytes, less than the layers the failed load left out (%d)", retry, held)
	}
	if gotID, gotLayers := loaded(t, id2); gotID != id2 || gotLayers != diffIDs(t, v2) {
		t.Fatalf("v2 loaded as %s with layers %s", gotID, gotLayers)
	}

	docker(t, "rmi", id2)
	n = sent()
	if _, err := load(ctx, d, v2, id2); err != nil {
		t.Fatalf("load of v2 after a good one: %v", err)
	}
	if again := sent() - n; again > 256<<10 {
		t.Fatalf("after a load that sent every layer and loaded, the next sent %d bytes: it did not leave the held layers out", again)
	}
}
