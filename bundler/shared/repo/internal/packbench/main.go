// Command packbench measures the first release of an image-sized file:
// pullship's path (content-defined chunking, then a streaming pack pushed
// with bundler/repo) against the git CLI (git add + commit + git push to a
// local bare repository), in the same run on the same data. It prints wall
// times and peak RSS.
//
//	go run ./bundler/repo/internal/packbench -size 336 -data binary -target daemon
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"io/fs"
	mrand "math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/pullship/pullship/bundler/shared/repo"
	"github.com/restic/chunker"
)

func main() {
	size := flag.Int64("size", 336, "data size in MiB")
	data := flag.String("data", "binary", "random | binary (files of /usr concatenated) | text")
	target := flag.String("target", "daemon", "dir | daemon (git://)")
	work := flag.String("work", "", "work directory (default: a temp dir, removed)")
	baseline := flag.Bool("git", true, "also measure the git CLI baseline")
	phase := flag.String("phase", "", "internal: push FILE to URL and report")
	file := flag.String("file", "", "internal")
	url := flag.String("url", "", "internal")
	flag.Parse()
	if *phase != "" {
		var err error
		if *phase == "push" {
			err = push(*file, *url)
		} else {
			err = fetch(*url, *file)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "packbench:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*size<<20, *data, *target, *work, *baseline); err != nil {
		fmt.Fprintln(os.Stderr, "packbench:", err)
		os.Exit(1)
	}
}

func run(size int64, kind, target, work string, baseline bool) error {
	if work == "" {
		d, err := os.MkdirTemp("", "packbench")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		work = d
	}
	file := filepath.Join(work, "image.tar")
	if err := generate(file, size, kind); err != nil {
		return err
	}
	fmt.Printf("data: %d MiB %s\n", size>>20, kind)

	// pullship, in a child process so its peak RSS is its own.
	bare := filepath.Join(work, "pullship.git")
	if out, err := exec.Command("git", "init", "-q", "--bare", bare).CombinedOutput(); err != nil {
		return fmt.Errorf("git init: %v: %s", err, out)
	}
	url := bare
	if target == "daemon" {
		u, stop, err := daemon(work)
		if err != nil {
			return err
		}
		defer stop()
		url = u + "/pullship.git"
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	start := time.Now()
	out, err := exec.Command(self, "-phase=push", "-file="+file, "-url="+url).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pullship push: %v: %s", err, out)
	}
	ours := time.Since(start)
	fmt.Printf("pullship (%s): %.2fs total\n%s", target, ours.Seconds(), out)
	if out, err := exec.Command("git", "-C", bare, "fsck", "--strict", "--no-dangling").CombinedOutput(); err != nil {
		return fmt.Errorf("git fsck of the pushed repository: %v: %s", err, out)
	}
	fmt.Println("git fsck --strict: clean")

	start = time.Now()
	out, err = exec.Command(self, "-phase=fetch", "-url="+url, "-file="+filepath.Join(work, "agent.git")).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pullship fetch: %v: %s", err, out)
	}
	fmt.Printf("pullship fetch+read (%s): %.2fs total\n%s", target, time.Since(start).Seconds(), out)

	if !baseline {
		return nil
	}
	wt := filepath.Join(work, "wt")
	gbare := filepath.Join(work, "git.git")
	steps := [][]string{
		{"init", "-q", "--bare", gbare},
		{"init", "-q", wt},
	}
	for _, s := range steps {
		if out, err := exec.Command("git", s...).CombinedOutput(); err != nil {
			return fmt.Errorf("git %v: %v: %s", s, err, out)
		}
	}
	if err := os.Rename(file, filepath.Join(wt, "image.tar")); err != nil {
		return err
	}
	start = time.Now()
	var rss []string
	for _, s := range [][]string{
		{"-C", wt, "add", "image.tar"},
		{"-C", wt, "-c", "user.name=b", "-c", "user.email=b@x", "commit", "-q", "-m", "image"},
		{"-C", wt, "push", "-q", gbare, "HEAD:refs/heads/releases"},
	} {
		cmd := exec.Command("/usr/bin/time", append([]string{"-f", "%M", "git"}, s...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("git %v: %v: %s", s, err, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		rss = append(rss, s[2]+" "+lines[len(lines)-1]+" KiB")
	}
	theirs := time.Since(start)
	fmt.Printf("git CLI (add+commit+push): %.2fs, peak RSS per step: %s\n", theirs.Seconds(), strings.Join(rss, ", "))
	fmt.Printf("speedup: %.1fx\n", theirs.Seconds()/ours.Seconds())
	return nil
}

// generate writes size bytes of deterministic data.
func generate(path string, size int64, kind string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	left := size
	write := func(b []byte) {
		if int64(len(b)) > left {
			b = b[:left]
		}
		w.Write(b)
		left -= int64(len(b))
	}
	switch kind {
	case "random":
		rng := mrand.New(mrand.NewSource(1))
		buf := make([]byte, 1<<20)
		for left > 0 {
			rng.Read(buf)
			write(buf)
		}
	case "text":
		rng := mrand.New(mrand.NewSource(1))
		words := strings.Fields("listener tcp default address port cluster node vernemq erlang allow anonymous off plugins max connections queue")
		var line strings.Builder
		for left > 0 {
			line.Reset()
			for range 12 {
				line.WriteString(words[rng.Intn(len(words))])
				line.WriteByte(' ')
			}
			line.WriteString(strconv.Itoa(rng.Int()))
			line.WriteByte('\n')
			write([]byte(line.String()))
		}
	case "binary":
		for left > 0 {
			n0 := left
			err := filepath.WalkDir("/usr", func(p string, d fs.DirEntry, err error) error {
				if err != nil || !d.Type().IsRegular() || left <= 0 {
					if left <= 0 {
						return filepath.SkipAll
					}
					return nil
				}
				src, err := os.Open(p)
				if err != nil {
					return nil
				}
				defer src.Close()
				n, _ := io.Copy(w, io.LimitReader(src, left))
				left -= n
				return nil
			})
			if err != nil {
				return err
			}
			if left == n0 {
				return fmt.Errorf("no readable files under /usr")
			}
		}
	default:
		return fmt.Errorf("unknown data kind %q", kind)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}

func daemon(base string) (string, func(), error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	cmd := exec.Command("git", "daemon", "--export-all", "--enable=receive-pack", "--reuseaddr",
		"--base-path="+base, "--listen=127.0.0.1", "--port="+port, base)
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() { cmd.Process.Kill(); cmd.Wait() }
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err == nil {
			c.Close()
			return "git://127.0.0.1:" + port, stop, nil
		}
		if time.Now().After(deadline) {
			stop()
			return "", nil, fmt.Errorf("git daemon not listening: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type chunk struct {
	off, size int64
	id        plumbing.Hash
	sha256    string
}

// push is pullship's path: pass 1 chunks and hashes, pass 2 streams the pack.
func push(path, url string) error {
	start := time.Now()
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var pol chunker.Pol = 0x3DA3358B4DC173 // fixed: deterministic chunks
	ch := chunker.New(bufio.NewReaderSize(f, 1<<20), pol)
	buf := make([]byte, chunker.MaxSize)
	var chunks []chunk
	var off int64
	for {
		c, err := ch.Next(buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		id := repo.HashObject(plumbing.BlobObject, c.Data)
		sum := sha256.Sum256(c.Data)
		chunks = append(chunks, chunk{off: off, size: int64(c.Length), id: id, sha256: hex.EncodeToString(sum[:])})
		off += int64(c.Length)
	}
	pass1 := time.Since(start)

	st := repo.NewObjectStream(func(o repo.Object) (io.ReadCloser, error) {
		for _, c := range chunks { // linear is fine for a benchmark's few hundred chunks
			if c.id == o.ID {
				return io.NopCloser(io.NewSectionReader(f, c.off, c.size)), nil
			}
		}
		return nil, fmt.Errorf("no chunk %s", o.ID)
	})
	tb := repo.NewTreeBuilder()
	seen := map[string]bool{}
	for _, c := range chunks {
		st.Add(repo.Object{ID: c.id, Type: plumbing.BlobObject, Size: c.size})
		if !seen[c.sha256] {
			seen[c.sha256] = true
			if err := tb.Add(c.sha256, filemode.Regular, c.id); err != nil {
				return err
			}
		}
	}
	tree, err := tb.Build(st)
	if err != nil {
		return err
	}
	sig := repo.Signature{Name: "bench", Email: "bench@pullship.invalid", When: time.Unix(0, 0).UTC()}
	data, cid, err := repo.EncodeCommit(repo.Commit{Tree: tree, Author: sig, Committer: sig, Message: "image\n"})
	if err != nil {
		return err
	}
	st.AddBytes(plumbing.CommitObject, data)
	tag := sha256.Sum256(data)

	ctx := context.Background()
	r, err := repo.Open(ctx, url, repo.Options{})
	if err != nil {
		return err
	}
	t2 := time.Now()
	res, err := r.Push(ctx, []repo.RefUpdate{{Name: "refs/tags/pullship/images/" + hex.EncodeToString(tag[:]), New: cid}}, st)
	if err != nil {
		return err
	}
	pass2 := time.Since(t2)
	hwm := "?"
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "VmHWM:") {
				hwm = strings.TrimSpace(strings.TrimPrefix(l, "VmHWM:"))
			}
		}
	}
	fmt.Printf("  chunks: %d, pass 1 (chunk+sha1+sha256): %.2fs, pass 2 (pack+push): %.2fs, pack %d MiB, peak RSS %s\n",
		len(chunks), pass1.Seconds(), pass2.Seconds(), res.PackBytes>>20, hwm)
	return nil
}

// fetch is the agent's path: fetch the image tag into a fresh store, then
// stream every chunk with its size enforced and its sha256 checked.
func fetch(url, dir string) error {
	ctx := context.Background()
	r, err := repo.Open(ctx, url, repo.Options{})
	if err != nil {
		return err
	}
	refs, err := r.Refs(ctx)
	if err != nil {
		return err
	}
	var ref string
	for name := range refs {
		if strings.HasPrefix(name, "refs/tags/pullship/images/") {
			ref = name
		}
	}
	local, err := repo.Init(dir)
	if err != nil {
		return err
	}
	start := time.Now()
	got, err := r.Fetch(ctx, local, repo.FetchRequest{Refs: []string{ref}})
	if err != nil {
		return err
	}
	fetched := time.Since(start)
	start = time.Now()
	entries, err := local.ListTree(got[ref], "")
	if err != nil {
		return err
	}
	var total int64
	for _, e := range entries {
		size, err := local.BlobSize(e.ID)
		if err != nil {
			return err
		}
		rc, err := local.OpenBlob(e.ID, size)
		if err != nil {
			return err
		}
		h := sha256.New()
		n, err := io.Copy(h, rc)
		rc.Close()
		if err != nil {
			return err
		}
		if hex.EncodeToString(h.Sum(nil)) != e.Name {
			return fmt.Errorf("chunk %s: sha256 mismatch", e.Name)
		}
		total += n
	}
	hwm := "?"
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "VmHWM:") {
				hwm = strings.TrimSpace(strings.TrimPrefix(l, "VmHWM:"))
			}
		}
	}
	fmt.Printf("  fetch: %.2fs, read+sha256 %d chunks (%d MiB): %.2fs, peak RSS %s\n",
		fetched.Seconds(), len(entries), total>>20, time.Since(start).Seconds(), hwm)
	return nil
}
