// Package image turns a container image into the chunked form a release
// stores, and back.
//
// [Scan] reads an image once (a `docker save` tarball, an OCI image layout
// directory or tarball, or an image in the local Docker engine), validates
// its structure (config digest = image ID, layer digests = the config's
// diff IDs) and returns a [schema.ImageIndex]: the ordered tar entries of
// the image's `docker save` stream, every regular file split into
// content-defined chunks (restic's Rabin chunker with a fixed polynomial,
// 512 KiB min, ~1 MiB average, 8 MiB max). Chunking each file on its own,
// with a fixed polynomial, makes boundaries depend only on the bytes: one
// changed file inside a layer changes only the chunks around it, so a new
// release of an image sends little more than what changed.
//
// [Reader.Chunks] is the second pass: it re-reads only the chunks a caller
// wants (the git layer asks for the ones the server lacks), checking each
// against the index. chunks.Rebuild (bundler/shared/chunks) writes the
// `docker save` stream back from
// chunks, verifying every chunk before any of its bytes are written, for the
// agent to pipe into the engine's image load.
//
// Memory stays bounded by the largest chunk (8 MiB) plus a fixed buffer,
// whatever the size of the image: no layer is ever held whole.
package image
