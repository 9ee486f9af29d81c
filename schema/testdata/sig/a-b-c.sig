[[signature]]
keyid = "e62a66ed75775026f25670af71847593a088aa09446d3ac91b3afa0aee5e76db"
algorithm = "ecdsa-p256-sha256"
value = "MEQCIA3x8EkGhBkIuhwiO5QHavCRfSddifoPmuf/FZG177+zAiBPR6oUMHtl63m4CMmMGZcvyAgqXBs1NYbib3dVBra1Zw=="

[[signature]]
keyid = "4f1477e960c25453044ae21fc50a089fd94c16d0e1360ab0315a2e5c0931f21b"
algorithm = "ecdsa-p256-sha256"
value = "MEUCIFVxLyIuPc6FT8MY5AtJ+586w6Ce3f2LmLGgZAWVyzyJAiEAkdVYo2l5RyDO92akf27mszQ9Mr89l0yq9GvwphveC9k="

[[signature]]
keyid = "65f1c1a3ae611ea8732840c66dbb4a968df841c28f677c817d9538840f2b6f53"
algorithm = "ed25519"
value = "1UhGnmDcXO1y/TUL2h/9h9+ml2fIec6E7p1pVOkxF4ydAQLImwBQKgFRWbX1v45QwruagjINHuqTefsXrPFGDw=="
