package schema

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Path and name bounds. They are far above what a real fleet needs and low
// enough that a hostile manifest cannot make a verifier allocate much.
const (
	// MaxPathLen bounds every path in a fleet, manifest or status file.
	MaxPathLen = 1024
	// MaxPathComponentLen bounds one component of such a path (NAME_MAX).
	MaxPathComponentLen = 255
	// MaxNameLen bounds node, region, image and template names.
	MaxNameLen = 63
)

// CheckName reports whether s is a safe name for a node, region, image or
// template: 1 to 63 characters from [a-z0-9-_.], starting with [a-z0-9].
// Names end up in git ref names (status/<node>) and repository paths
// (nodes/<node>/, images/<name>.toml), so ".." anywhere, a trailing "." and
// a ".lock" suffix are refused too (git forbids them in refs).
func CheckName(s string) error {
	if s == "" {
		return fmt.Errorf("name is empty")
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("name %.20q... is longer than %d characters", s, MaxNameLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if i > 0 {
			ok = ok || c == '-' || c == '_' || c == '.'
		}
		if !ok {
			return fmt.Errorf("name %q: must match [a-z0-9][a-z0-9-_.]{0,62}", s)
		}
	}
	if strings.Contains(s, "..") || strings.HasSuffix(s, ".") || strings.HasSuffix(s, ".lock") {
		return fmt.Errorf("name %q: must not contain \"..\" or end in \".\" or \".lock\"", s)
	}
	return nil
}

// CheckRelPath reports whether p is a safe relative slash-separated path:
// not empty, not absolute, no empty, "." or ".." component, no NUL, control
// character or backslash, valid UTF-8, and within MaxPathLen and
// MaxPathComponentLen. Such a path joined under a directory stays inside it
// (symlinks aside, which the writer must not follow).
func CheckRelPath(p string) error {
	if strings.HasPrefix(p, "/") {
		return fmt.Errorf("path %q: must be relative", p)
	}
	return checkComponents(p, p)
}

// CheckAbsPath reports whether p is a safe absolute slash-separated path: it
// starts with "/", is not "/" itself, and the rest satisfies CheckRelPath.
// No cleaning is done: a path that would change under path.Clean is refused,
// so the manifest names exactly one file.
func CheckAbsPath(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("path %q: must be absolute", p)
	}
	return checkComponents(p, p[1:])
}

func checkComponents(orig, rest string) error {
	if orig == "" {
		return fmt.Errorf("path is empty")
	}
	if len(orig) > MaxPathLen {
		return fmt.Errorf("path %.40q... is longer than %d bytes", orig, MaxPathLen)
	}
	if !utf8.ValidString(orig) {
		return fmt.Errorf("path %q: not valid UTF-8", orig)
	}
	for _, r := range orig {
		switch {
		case r == 0:
			return fmt.Errorf("path %q: contains NUL", orig)
		case r == '\\':
			return fmt.Errorf("path %q: contains a backslash", orig)
		case r < 0x20 || r == 0x7f:
			return fmt.Errorf("path %q: contains a control character", orig)
		}
	}
	if rest == "" {
		return fmt.Errorf("path %q: names the root directory", orig)
	}
	for _, c := range strings.Split(rest, "/") {
		switch {
		case c == "":
			return fmt.Errorf("path %q: has an empty component", orig)
		case c == "." || c == "..":
			return fmt.Errorf("path %q: has a %q component", orig, c)
		case len(c) > MaxPathComponentLen:
			return fmt.Errorf("path %q: a component is longer than %d bytes", orig, MaxPathComponentLen)
		}
	}
	return nil
}
