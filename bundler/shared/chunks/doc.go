// Package chunks is the read side of an image's chunked form: the encoding
// of chunk blobs (one zstd frame each, or the chunk as it is) and [Rebuild],
// which writes an image's `docker save` stream back from its chunks,
// verifying every chunk against the signed index before any of its bytes
// are written.
//
// Both sides import it: the agent rebuilds images to load them, the release
// side (bundler/image) encodes the chunks it scans. It has no network, git
// or Docker code; bundler/image, which reads images in and cuts them into
// chunks, is the release side's alone.
package chunks
