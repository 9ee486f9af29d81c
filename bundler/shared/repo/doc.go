// Package repo is pullship's git layer, imported by both sides (the agent
// fetches releases and pushes its status through it, the release side
// pushes releases): it writes and reads a release
// repository on any git server or in a plain directory, fast and with
// bounded memory.
//
// Writing goes through a streaming pack writer ([PackWriter]): objects are
// described up front ([Object], [ObjectStream]), compressed at zlib's
// fastest level without delta search, and streamed straight into the
// server's receive-pack ([Remote.Push]) or into a pack file of a local
// repository ([Store.Write]); nothing holds more than one object's buffers.
// Ref updates are compare-and-swap: losing a race is a [*RefConflictError].
//
// Reading goes through [Store], a bare repository on disk that
// [Remote.Fetch] fills with only the refs asked for and [Store.OpenBlob]
// streams from with the declared size enforced. What a server sends is
// read with pullship's own bounded code, not go-git's: the pack indexer and
// delta resolver (every size, depth, count and byte of work bounded), the
// tree, commit and tag decoders (go-git's plumbing/object would link a
// diff library into the agent), and limits under go-git's HTTP decoders.
//
// Remotes: http(s)://, git:// and ssh:// speak the git wire protocol
// through pullship's own client (pktline.go, session.go, protocol.go), not
// go-git's transports: those read the ref advertisement whole, dial with
// no context or deadline (a server that accepts the connection and then
// says nothing hangs the caller forever), buffer an HTTP push whole, and,
// in go-git v5, speak only protocol v0. Every session is dialed with the
// caller's context and a connect timeout; a server that sends (or takes)
// nothing for the stall timeout ([Options.StallTimeout]) ends the
// operation with [ErrStalled]; every reply is read packet by packet within
// a budget (the advertisement within maxAdvertisement, a pack within the
// fetch's limit). Polls and fetches ask for protocol v2 (git://: the
// "version=2" request parameter; HTTP: the Git-Protocol header; ssh://: the
// GIT_PROTOCOL variable, which OpenSSH passes on only with AcceptEnv) and
// use ls-refs with ref prefixes, so an idle poll costs the same whatever the
// number of status branches; a server that answers in v0 is read in v0.
// Pushes use v0 receive-pack, which has no v2. ssh:// runs over golang.org/x/crypto/ssh with the host
// key pinned ([Credentials]); HTTP goes through one shared keep-alive
// client. A plain directory path
// or a file:// URL is a bare repository accessed in-process, without the git
// CLI: go-git's file transport would exec git-upload-pack/git-receive-pack,
// and its in-process server neither checks the old value of a ref update
// nor avoids delta search when serving a fetch.
//
// Credentials ([Credentials]) come from files: an SSH key with the server's
// host key pinned in known_hosts (no trust on first use: an unknown or
// changed key is a [*HostKeyError]), a password or token file for HTTP
// basic auth, a CA file added to the system's roots (a certificate that
// does not verify is a [*CertificateError]). Secret files readable by group
// or others are refused ([*FileModeError]); secrets never appear in errors
// or in a remote's String.
package repo
