package schema

import (
	"strings"
	"testing"
	"time"
)

var testExpires = time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)

func newTestRoot(t testing.TB, version int64, threshold int, keys ...testKey) *Root {
	t.Helper()
	r := &Root{Version: version, Expires: testExpires, Threshold: threshold}
	for _, k := range keys {
		r.Keys = append(r.Keys, k.rootKey(t))
	}
	return r
}

func encodeRoot(t testing.TB, r *Root) []byte {
	t.Helper()
	data, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestRootRoundTrip(t *testing.T) {
	r := newTestRoot(t, 3, 2, newTestKey(t, AlgECDSAP256SHA256), newTestKey(t, AlgEd25519))
	data := encodeRoot(t, r)
	got, err := ParseRoot("root-3.toml", data)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if got.Version != 3 || got.Threshold != 2 || !got.Expires.Equal(testExpires) || len(got.Keys) != 2 {
		t.Fatalf("parsed %+v", got)
	}
	for i := range got.Keys {
		if got.Keys[i] != r.Keys[i] {
			t.Fatalf("key %d changed:\n%+v\n%+v", i, got.Keys[i], r.Keys[i])
		}
	}
	if again := encodeRoot(t, got); string(again) != string(data) {
		t.Fatalf("encoding is not canonical:\n%s\n%s", data, again)
	}
	if RootFileName(3) != "root-3.toml" {
		t.Fatal(RootFileName(3))
	}
}

func TestRootValidate(t *testing.T) {
	a, b, c := newTestKey(t, AlgECDSAP256SHA256), newTestKey(t, AlgEd25519), newTestKey(t, AlgECDSAP256SHA256)
	cases := map[string]struct {
		edit func(r *Root)
		want string
	}{
		"version 0":       {func(r *Root) { r.Version = 0 }, "version 0: must be 1 or more"},
		"no expires":      {func(r *Root) { r.Expires = time.Time{} }, "expires is missing"},
		"not utc":         {func(r *Root) { r.Expires = r.Expires.In(time.FixedZone("x", 3600)) }, "must be a UTC"},
		"threshold 0":     {func(r *Root) { r.Threshold = 0 }, "threshold 0"},
		"threshold > n":   {func(r *Root) { r.Threshold = 3 }, "threshold 3: must be between 1 and the number of keys (2)"},
		"no keys":         {func(r *Root) { r.Keys = nil }, "no keys"},
		"listed twice":    {func(r *Root) { r.Keys[1] = r.Keys[0] }, "listed twice"},
		"id mismatch":     {func(r *Root) { r.Keys[0].ID = c.id() }, "id does not match the public key"},
		"bad id":          {func(r *Root) { r.Keys[0].ID = "abc" }, "not 64 lowercase hex"},
		"alg mismatch":    {func(r *Root) { r.Keys[0].Algorithm = AlgEd25519 }, "but the public key is ecdsa-p256-sha256"},
		"unknown alg":     {func(r *Root) { r.Keys[0].Algorithm = "rsa" }, `unknown algorithm "rsa"`},
		"bad pem":         {func(r *Root) { r.Keys[0].PublicKey = "hello" }, "no PEM block"},
		"private key pem": {func(r *Root) { r.Keys[0].PublicKey = string(a.kp.PrivatePEM) }, `want "PUBLIC KEY"`},
	}
	for name, tc := range cases {
		r := newTestRoot(t, 1, 1, a, b)
		tc.edit(r)
		err := r.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", name, err, tc.want)
		}
	}
	if err := newTestRoot(t, 1, 2, a, b).Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestParseRootRejects(t *testing.T) {
	a := newTestKey(t, AlgECDSAP256SHA256)
	good := string(encodeRoot(t, newTestRoot(t, 1, 1, a)))
	cases := map[string]struct{ data, want string }{
		"unknown key":  {good + "owner = \"x\"\n", `unknown key "key.owner"`},
		"top unknown":  {"colour = 1\n" + good, `root-1.toml:1: unknown key "colour"`},
		"twice listed": {good + good[strings.Index(good, "[[key]]"):], "listed twice"},
		"no expires":   {strings.Replace(good, "expires", "#", 1), "expires is missing"},
		"wrong type":   {strings.Replace(good, "version = 1", "version = \"1\"", 1), "root-1.toml"},
		"nul":          {good + "\x00", "NUL"},
	}
	for name, c := range cases {
		_, err := ParseRoot("root-1.toml", []byte(c.data))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", name, err, c.want)
		}
	}
}

func TestRootExpiry(t *testing.T) {
	r := newTestRoot(t, 1, 1, newTestKey(t, AlgEd25519))
	if r.Expired(testExpires.Add(-time.Second)) {
		t.Fatal("expired a second early")
	}
	if !r.Expired(testExpires) {
		t.Fatal("not expired at the instant it expires")
	}
}
