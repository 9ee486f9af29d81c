[[signature]]
keyid = "e62a66ed75775026f25670af71847593a088aa09446d3ac91b3afa0aee5e76db"
algorithm = "ecdsa-p256-sha256"
value = "MEYCIQC/4Lm/N5iKgfTLCxUuojmsf3Rg2BDkuCQaTWRvGCJD+QIhAJeSmEzaIqVCS8s4p0PGiH9gZ1FsRp9vLGQu8jH2aFj8"

[[signature]]
keyid = "4f1477e960c25453044ae21fc50a089fd94c16d0e1360ab0315a2e5c0931f21b"
algorithm = "ecdsa-p256-sha256"
value = "MEUCIDSJ4wPM5M336LoxLqy01L5pYkzhQGGMmv2DylvPtJo3AiEA8041wgyDfUcB/klEM4jsa4IJ+Mk4Cb4M1G+D6NbrMiY="

[[signature]]
keyid = "65f1c1a3ae611ea8732840c66dbb4a968df841c28f677c817d9538840f2b6f53"
algorithm = "ed25519"
value = "vDWQZX3WWQgyy8rPTDz8TzCGadBywMxLB4i3VNN+aNOfJm6JotQ+bHtKOw2BC9Ns9yiY6+jsY8OwVNX0FE6sBA=="
