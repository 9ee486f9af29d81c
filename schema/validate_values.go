package schema

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Bounds on lists and strings, shared by the fleet, manifest and status checks.
const (
	MaxNodes        = 1024     // nodes in a fleet or release
	MaxImages       = 16       // images in a release
	MaxFilesPerNode = 256      // files of one node (templates in a fleet)
	MaxFileLength   = 64 << 20 // bytes of one rendered node file
	MaxArgs         = 64       // arguments of one command
	MaxListLen      = 128      // ports, binds, env entries, vars, rollout.now
	MaxStringLen    = 4096     // any single string not bounded more tightly
	MaxOutputLen    = 4096     // health output and last_error in a status report
	MaxWave         = 1000     // highest rollout wave
	MaxDuration     = 24 * time.Hour
	MaxKeyPEMLen    = 4096 // a public key PEM block
	MaxRetries      = 100  // health check retries
)

// Duration is a time.Duration written in TOML as a Go duration string
// ("30s", "5m", "1h30m"). TOML has no duration type.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalText writes d the way time.Duration.String does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText parses a Go duration string; negative durations are refused.
func (d *Duration) UnmarshalText(b []byte) error {
	if len(b) > 64 {
		return fmt.Errorf("duration %.20q...: too long", b)
	}
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: %w", b, err)
	}
	if v < 0 {
		return fmt.Errorf("duration %q: negative", b)
	}
	*d = Duration(v)
	return nil
}

// FileMode is a file's permission bits written in TOML as an octal string
// ("0644"). Only the permission bits 0o777 are allowed: no setuid, setgid or
// sticky bit ever comes from a manifest.
type FileMode uint32

// MarshalText writes m as four octal digits.
func (m FileMode) MarshalText() ([]byte, error) { return fmt.Appendf(nil, "%04o", uint32(m)), nil }

// UnmarshalText parses three or four octal digits with at most 0o777 set.
func (m *FileMode) UnmarshalText(b []byte) error {
	s := string(b)
	if len(s) < 3 || len(s) > 4 {
		return fmt.Errorf("mode %q: want 3 or 4 octal digits like \"0644\"", s)
	}
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || v > 0o777 {
		return fmt.Errorf("mode %q: want octal permission bits no higher than 0777", s)
	}
	*m = FileMode(v)
	return nil
}

func checkString(what, s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%s: %d bytes is longer than %d", what, len(s), max)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s: not valid UTF-8", what)
	}
	if strings.IndexByte(s, 0) >= 0 {
		return fmt.Errorf("%s: contains NUL", what)
	}
	return nil
}

// checkArgv checks a command's argument vector; required means it must not
// be empty.
func checkArgv(what string, argv []string, required bool) error {
	if len(argv) == 0 {
		if required {
			return fmt.Errorf("%s: command is empty", what)
		}
		return nil
	}
	if len(argv) > MaxArgs {
		return fmt.Errorf("%s: %d arguments, at most %d allowed", what, len(argv), MaxArgs)
	}
	if argv[0] == "" {
		return fmt.Errorf("%s: program name is empty", what)
	}
	for i, a := range argv {
		if err := checkString(fmt.Sprintf("%s: argument %d", what, i), a, MaxStringLen); err != nil {
			return err
		}
	}
	return nil
}

func checkHex64(what, s string) error {
	if len(s) != 64 {
		return fmt.Errorf("%s %q: want 64 lowercase hex digits", what, s)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("%s %q: want 64 lowercase hex digits", what, s)
		}
	}
	return nil
}

func checkHex40(what, s string) error {
	if len(s) != 40 {
		return fmt.Errorf("%s %q: want 40 lowercase hex digits", what, s)
	}
	return checkHex64(what, s+strings.Repeat("0", 24))
}

// checkDigest checks an image digest "sha256:<64 hex>".
func checkDigest(what, s string) error {
	h, ok := strings.CutPrefix(s, "sha256:")
	if !ok {
		return fmt.Errorf("%s %q: want \"sha256:<64 hex>\"", what, s)
	}
	return checkHex64(what, h)
}

// checkUTC requires a set RFC 3339 time in UTC.
func checkUTC(what string, t time.Time) error {
	if t.IsZero() {
		return fmt.Errorf("%s: missing", what)
	}
	if name, off := t.Zone(); off != 0 || name != "UTC" {
		return fmt.Errorf("%s %s: must be UTC (end in Z)", what, t.Format(time.RFC3339))
	}
	if t.Year() < 2000 || t.Year() > 9999 {
		return fmt.Errorf("%s %s: year out of range", what, t.Format(time.RFC3339))
	}
	return nil
}

func checkDuration(what string, d Duration, min time.Duration) error {
	if d.D() < min || d.D() > MaxDuration {
		return fmt.Errorf("%s %s: must be between %s and %s", what, d.D(), min, MaxDuration)
	}
	return nil
}

// CheckPort reports whether p is a Docker port mapping
// "[ip:]hostport:containerport[/tcp|udp|sctp]" with ports in 1..65535, and
// returns the host side ("ip:port/proto", ip may be empty) for duplicate checks.
func CheckPort(p string) (hostKey string, err error) {
	if len(p) > 128 {
		return "", fmt.Errorf("port %.20q...: too long", p)
	}
	spec, proto, hasProto := strings.Cut(p, "/")
	if !hasProto {
		proto = "tcp"
	}
	switch proto {
	case "tcp", "udp", "sctp":
	default:
		return "", fmt.Errorf("port %q: protocol must be tcp, udp or sctp", p)
	}
	parts := strings.Split(spec, ":")
	ip := ""
	switch len(parts) {
	case 2:
	case 3:
		ip = parts[0]
		if !isIPv4(ip) {
			return "", fmt.Errorf("port %q: host address %q is not an IPv4 address", p, ip)
		}
		parts = parts[1:]
	default:
		return "", fmt.Errorf("port %q: want [ip:]hostport:containerport[/proto]", p)
	}
	for _, n := range parts {
		v, err := strconv.Atoi(n)
		if err != nil || v < 1 || v > 65535 || strconv.Itoa(v) != n {
			return "", fmt.Errorf("port %q: %q is not a port number 1-65535", p, n)
		}
	}
	return ip + ":" + parts[0] + "/" + proto, nil
}

func isIPv4(s string) bool {
	f := strings.Split(s, ".")
	if len(f) != 4 {
		return false
	}
	for _, x := range f {
		v, err := strconv.Atoi(x)
		if err != nil || v < 0 || v > 255 || strconv.Itoa(v) != x {
			return false
		}
	}
	return true
}

// CheckBind reports whether b is a bind mount "source:target[:ro|:rw]" whose
// source is an absolute host path or a volume name, and whose target is an
// absolute container path. It returns the target for duplicate checks.
func CheckBind(b string) (target string, err error) {
	parts := strings.Split(b, ":")
	if len(parts) == 3 {
		if parts[2] != "ro" && parts[2] != "rw" {
			return "", fmt.Errorf("bind %q: option must be ro or rw", b)
		}
		parts = parts[:2]
	}
	if len(parts) != 2 {
		return "", fmt.Errorf("bind %q: want source:target[:ro|rw]", b)
	}
	if strings.HasPrefix(parts[0], "/") {
		if err := CheckAbsPath(parts[0]); err != nil {
			return "", fmt.Errorf("bind %q: source: %w", b, err)
		}
	} else if err := CheckName(parts[0]); err != nil {
		return "", fmt.Errorf("bind %q: source is neither an absolute path nor a volume name: %w", b, err)
	}
	if err := CheckAbsPath(parts[1]); err != nil {
		return "", fmt.Errorf("bind %q: target: %w", b, err)
	}
	return parts[1], nil
}

// checkEnvName reports whether k is a portable environment variable name.
func checkEnvName(k string) error {
	if k == "" || len(k) > 256 {
		return fmt.Errorf("env name %.20q: must be 1-256 characters", k)
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9') {
			return fmt.Errorf("env name %q: must match [A-Za-z_][A-Za-z0-9_]*", k)
		}
	}
	return nil
}

func checkEnv(env map[string]string) error {
	if len(env) > MaxListLen {
		return fmt.Errorf("env: %d entries, at most %d allowed", len(env), MaxListLen)
	}
	for k, v := range env {
		if err := checkEnvName(k); err != nil {
			return err
		}
		if err := checkString("env "+k, v, MaxStringLen); err != nil {
			return err
		}
	}
	return nil
}

// checkRestart accepts Docker's restart policies.
func checkRestart(r string) error {
	switch r {
	case "no", "always", "unless-stopped", "on-failure":
		return nil
	}
	if n, ok := strings.CutPrefix(r, "on-failure:"); ok {
		if v, err := strconv.Atoi(n); err == nil && v >= 1 && v <= 1000 && strconv.Itoa(v) == n {
			return nil
		}
	}
	return fmt.Errorf("restart %q: want no, always, unless-stopped, on-failure or on-failure:N", r)
}

// Reload actions.
const (
	ReloadExec    = "exec"    // run Reload.Command inside the container
	ReloadRestart = "restart" // restart the container
	ReloadNone    = "none"    // files are picked up by the service itself
)

func checkReload(r Reload) error {
	switch r.Action {
	case ReloadExec:
		return checkArgv("reload", r.Command, true)
	case ReloadRestart, ReloadNone:
		if len(r.Command) > 0 {
			return fmt.Errorf("reload: action %q takes no command", r.Action)
		}
		return nil
	}
	return fmt.Errorf("reload: action %q: want exec, restart or none", r.Action)
}

func checkHealth(h Health) error {
	if len(h.Command) == 0 {
		if h.Expect != "" || h.Timeout != 0 || h.Retries != 0 || h.Interval != 0 {
			return fmt.Errorf("health: settings without a command")
		}
		return nil
	}
	if err := checkArgv("health", h.Command, true); err != nil {
		return err
	}
	if err := checkString("health: expect", h.Expect, MaxStringLen); err != nil {
		return err
	}
	if err := checkDuration("health: timeout", h.Timeout, time.Second); err != nil {
		return err
	}
	if h.Retries < 0 || h.Retries > MaxRetries {
		return fmt.Errorf("health: retries %d: must be 0-%d", h.Retries, MaxRetries)
	}
	if h.Retries > 0 {
		if err := checkDuration("health: interval", h.Interval, 100*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// Cluster view formats the agent can parse.
const (
	ClusterVMQTable = "vmq-table" // vmq-admin cluster show (both table styles)
	ClusterVMQJSON  = "vmq-json"  // vmq-admin cluster show --format=json
)

func checkClusterFormat(f string) error {
	if f != ClusterVMQTable && f != ClusterVMQJSON {
		return fmt.Errorf("cluster: format %q: want %q or %q", f, ClusterVMQTable, ClusterVMQJSON)
	}
	return nil
}

// Attachment drivers.
const (
	DriverWeave  = "weave"  // weave attach CIDR CONTAINER
	DriverDocker = "docker" // docker network connect --ip on a user-defined network
	DriverNone   = "none"   // no overlay address
)

func checkAttach(driver, network string) error {
	switch driver {
	case DriverDocker:
		if err := CheckName(network); err != nil {
			return fmt.Errorf("attach: driver docker needs a network name: %w", err)
		}
		return nil
	case DriverWeave, DriverNone:
		if network != "" {
			return fmt.Errorf("attach: driver %q takes no network name", driver)
		}
		return nil
	}
	return fmt.Errorf("attach: driver %q: want weave, docker or none", driver)
}

// CheckServiceNetwork requires the name of a user-defined Docker network a
// container can be created on: a name as [CheckName] has them, and none of
// the engine's own modes (bridge, host, none, default), which share the
// host's network or none at all rather than one the node's services share.
func CheckServiceNetwork(name string) error {
	if err := CheckName(name); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	switch name {
	case "bridge", "host", "none", "default":
		return fmt.Errorf("network %q: an engine network mode, not a user-defined network (leave network out for the default bridge)", name)
	}
	return nil
}

// StatusKeyID parses a PEM public key (ECDSA P-256 or Ed25519, PKIX
// "PUBLIC KEY" block) and returns its key id: the lowercase hex sha256 of
// its DER SubjectPublicKeyInfo.
func StatusKeyID(pemText string) (string, error) {
	if len(pemText) > MaxKeyPEMLen {
		return "", fmt.Errorf("public key: %d bytes is longer than %d", len(pemText), MaxKeyPEMLen)
	}
	b, rest := pem.Decode([]byte(pemText))
	if b == nil || b.Type != "PUBLIC KEY" {
		return "", fmt.Errorf("public key: want a PEM \"PUBLIC KEY\" block")
	}
	if strings.TrimSpace(string(rest)) != "" {
		return "", fmt.Errorf("public key: data after the PEM block")
	}
	pub, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		return "", fmt.Errorf("public key: %w", err)
	}
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return "", fmt.Errorf("public key: ECDSA curve %s: want P-256", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	default:
		return "", fmt.Errorf("public key: type %T: want ECDSA P-256 or Ed25519", pub)
	}
	sum := sha256.Sum256(b.Bytes)
	return hex.EncodeToString(sum[:]), nil
}
