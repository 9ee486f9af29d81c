package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/docker/docker/client"
	"github.com/pullship/pullship/schema"
)

// Source is where an image is read from. Build one with [TarFile],
// [Directory], [Engine] or [ParseSource].
type Source interface {
	// String names the source in errors.
	String() string
	open(ctx context.Context) (*fileset, error)
}

// ParseSource maps a command-line image reference to a [Source]:
// "docker://NAME" reads NAME from the local Docker engine (DOCKER_HOST etc.
// from the environment, API version negotiated), an existing directory is an
// OCI image layout or an extracted `docker save`, and anything else is a
// tarball (`docker save` output or an OCI layout archive).
func ParseSource(ref string) (Source, error) {
	if name, ok := strings.CutPrefix(ref, "docker://"); ok {
		if name == "" {
			return nil, fmt.Errorf("image source %q: no image name after docker://", ref)
		}
		return &engineSource{ref: name}, nil
	}
	st, err := os.Stat(ref)
	if err != nil {
		return nil, fmt.Errorf("image source %q: %w (want a tarball, a directory or docker://NAME)", ref, err)
	}
	if st.IsDir() {
		return Directory(ref), nil
	}
	return TarFile(ref), nil
}

// TarFile is a tarball on disk: `docker save` output (legacy or OCI-style
// layout) or an OCI image layout archive. It must be seekable: Scan reads
// each entry in place.
func TarFile(path string) Source { return tarSource(path) }

// Directory is an OCI image layout directory (index.json, blobs/) or an
// extracted `docker save` (manifest.json at its root).
func Directory(path string) Source { return dirSource(path) }

// ImageSaver is the part of the Docker client an engine source needs.
type ImageSaver interface {
	ImageSave(ctx context.Context, imageIDs []string, opts ...client.ImageSaveOption) (io.ReadCloser, error)
}

// Engine reads image ref (a name:tag or an image ID) from a Docker engine
// through c. Scanning needs two passes and the engine streams once, so the
// `docker save` stream is spooled to an unlinked temporary file, freed when
// the [Reader] is closed.
func Engine(c ImageSaver, ref string) Source { return &engineSource{c: c, ref: ref} }

// fileset is an image stream as a list of entries whose contents can be read
// at will: the tar entries of an archive (read in place), files of a
// directory, or synthesized files.
type fileset struct {
	entries []entry
	closers []io.Closer
}

type entry struct {
	schema.ImageEntry // Path, Type, Mode, Size, Linkname
	// open returns a file's content; the caller closes it.
	open func() (readerAt, error)
}

type readerAt interface {
	io.ReaderAt
	io.Closer
}

// noClose is content whose lifetime is the fileset's.
type noClose struct{ io.ReaderAt }

func (noClose) Close() error { return nil }

func (f *fileset) Close() error {
	var errs []error
	for _, c := range f.closers {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

func (f *fileset) find(p string) *entry {
	for i := range f.entries {
		if f.entries[i].Path == p {
			return &f.entries[i]
		}
	}
	return nil
}

type tarSource string

func (s tarSource) String() string { return string(s) }

func (s tarSource) open(ctx context.Context) (*fileset, error) {
	f, err := os.Open(string(s))
	if err != nil {
		return nil, fmt.Errorf("open image %s: %w", s, err)
	}
	fs, err := readTar(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("read image %s: %w", s, err)
	}
	fs.closers = append(fs.closers, f)
	return fs, nil
}

// readTar lists the entries of the tar archive f and where their data is.
// archive/tar seeks over the data it skips (reading the last byte of each, so
// a truncated archive still fails here).
func readTar(f *os.File) (*fileset, error) {
	tr := tar.NewReader(f)
	fs := &fileset{}
	var end int64 // where the last entry's padded data ends
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			// A tar cut at an entry boundary reads as a clean end: only
			// the end-of-archive marker (two zero blocks) tells them apart.
			pos, serr := f.Seek(0, io.SeekCurrent)
			if serr != nil {
				return nil, serr
			}
			if pos < end+1024 {
				return nil, fmt.Errorf("truncated tar archive after %d entries: no end-of-archive marker", len(fs.entries))
			}
			break
		}
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("truncated tar archive after %d entries: %w", len(fs.entries), err)
			}
			return nil, fmt.Errorf("malformed tar archive after %d entries: %w", len(fs.entries), err)
		}
		if len(fs.entries) >= schema.MaxImageEntries {
			return nil, fmt.Errorf("more than %d tar entries", schema.MaxImageEntries)
		}
		e, err := tarEntry(hdr)
		if err != nil {
			return nil, err
		}
		off, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			return nil, err
		}
		end = off + (hdr.Size+511)&^511
		if e.Type == schema.EntryFile {
			sr := io.NewSectionReader(f, off, hdr.Size)
			e.open = func() (readerAt, error) { return noClose{sr}, nil }
		}
		fs.entries = append(fs.entries, e)
	}
	if len(fs.entries) == 0 {
		return nil, fmt.Errorf("empty tar archive")
	}
	// The data of the last entry was never skipped over: check it is there.
	if last := fs.entries[len(fs.entries)-1]; last.Type == schema.EntryFile && last.Size > 0 {
		ra, _ := last.open()
		defer ra.Close()
		if _, err := ra.ReadAt(make([]byte, 1), last.Size-1); err != nil {
			return nil, fmt.Errorf("truncated tar archive: entry %q: %w", last.Path, err)
		}
	}
	return fs, nil
}

func tarEntry(hdr *tar.Header) (entry, error) {
	name := hdr.Name
	var e entry
	switch hdr.Typeflag {
	case tar.TypeReg: // archive/tar reports old-style TypeRegA entries as TypeReg
		e.Type = schema.EntryFile
		e.Size = hdr.Size
	case tar.TypeDir:
		e.Type = schema.EntryDir
		name = strings.TrimSuffix(name, "/")
	case tar.TypeSymlink:
		e.Type = schema.EntrySymlink
		e.Linkname = hdr.Linkname
	default:
		return e, fmt.Errorf("tar entry %q: type %q not allowed (only files, directories and symlinks)", hdr.Name, hdr.Typeflag)
	}
	if err := schema.CheckImagePath(name); err != nil {
		return e, fmt.Errorf("tar entry: %w", err)
	}
	if hdr.Mode&0o7000 != 0 {
		return e, fmt.Errorf("tar entry %q: mode %#o has setuid, setgid or sticky bits", name, hdr.Mode)
	}
	if hdr.Size < 0 || hdr.Size > schema.MaxImageSize {
		return e, fmt.Errorf("tar entry %q: size %d out of range", name, hdr.Size)
	}
	e.Path = name
	e.Mode = hdr.Mode & 0o777 // file-type bits some writers add are redundant with the type flag
	return e, nil
}

type dirSource string

func (s dirSource) String() string { return string(s) }

func (s dirSource) open(ctx context.Context) (*fileset, error) {
	root := string(s)
	fset := &fileset{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if err := schema.CheckImagePath(rel); err != nil {
			return err
		}
		if len(fset.entries) >= schema.MaxImageEntries {
			return fmt.Errorf("more than %d files", schema.MaxImageEntries)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
			return fmt.Errorf("%s: setuid, setgid or sticky bit set", rel)
		}
		e := entry{ImageEntry: schema.ImageEntry{Path: rel, Mode: int64(info.Mode().Perm())}}
		switch {
		case info.Mode().IsRegular():
			e.Type, e.Size = schema.EntryFile, info.Size()
			e.open = func() (readerAt, error) { return os.Open(p) }
		case info.IsDir():
			e.Type = schema.EntryDir
		case info.Mode()&fs.ModeSymlink != 0:
			e.Type = schema.EntrySymlink
			if e.Linkname, err = os.Readlink(p); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: file type %s not allowed", rel, info.Mode().Type())
		}
		fset.entries = append(fset.entries, e)
		return nil
	})
	if err != nil {
		fset.Close()
		return nil, fmt.Errorf("read image directory %s: %w", root, err)
	}
	return fset, nil
}

type engineSource struct {
	c   ImageSaver // nil: a client from the environment
	ref string
}

func (s *engineSource) String() string { return "docker://" + s.ref }

func (s *engineSource) open(ctx context.Context) (fset *fileset, err error) {
	c := s.c
	if c == nil {
		cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
		if err != nil {
			return nil, fmt.Errorf("docker client: %w", err)
		}
		defer cli.Close()
		c = cli
	}
	f, err := os.CreateTemp("", "pullship-image-*.tar")
	if err != nil {
		return nil, fmt.Errorf("spool %s: %w", s, err)
	}
	// Unlinked at once: the kernel frees the spool when f is closed, even if
	// this process dies.
	os.Remove(f.Name())
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	rc, err := c.ImageSave(ctx, []string{s.ref})
	if err != nil {
		return nil, fmt.Errorf("docker save %s: %w", s.ref, err)
	}
	_, err = io.Copy(f, rc)
	rc.Close()
	if err != nil {
		return nil, fmt.Errorf("docker save %s: %w", s.ref, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	fset, err = readTar(f)
	if err != nil {
		return nil, fmt.Errorf("docker save %s: %w", s.ref, err)
	}
	fset.closers = append(fset.closers, f)
	return fset, nil
}

// memFile is a synthesized entry's content.
func memFile(p string, data []byte) entry {
	r := bytes.NewReader(data)
	return entry{
		ImageEntry: schema.ImageEntry{Path: p, Type: schema.EntryFile, Mode: 0o644, Size: int64(len(data))},
		open:       func() (readerAt, error) { return noClose{r}, nil },
	}
}

// resolve follows symlink entries (docker save links duplicate layers) to
// the file entry they name.
func (f *fileset) resolve(p string) (*entry, error) {
	for range 8 {
		e := f.find(p)
		if e == nil {
			return nil, fmt.Errorf("%s: not in the image", p)
		}
		if e.Type != schema.EntrySymlink {
			if e.Type != schema.EntryFile {
				return nil, fmt.Errorf("%s: not a file", p)
			}
			return e, nil
		}
		p = path.Join(path.Dir(p), e.Linkname)
	}
	return nil, fmt.Errorf("%s: too many levels of symlinks", p)
}
