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
// release of an image sends little more than what changed. An uncompressed
// layer tar is split first (split.go, with tar-split's archive/tar): the
// contents of its files are chunked as one stream, its headers and padding
// as another, so a layer rebuilt with new timestamps keeps its contents'
// chunks and costs only its header stream.
//
// [Reader.Chunks] delivers the chunks a caller wants from the blobs the
// scan encoded, checking each against the index; a release pushes the
// blobs themselves ([Reader.OpenChunk]). chunks.Rebuild (bundler/shared/chunks) writes the
// `docker save` stream back from
// chunks, verifying every chunk before any of its bytes are written, for the
// agent to pipe into the engine's image load.
//
// Memory stays bounded by the largest chunk (8 MiB) plus a fixed buffer,
// whatever the size of the image: no layer is ever held whole.
package image
