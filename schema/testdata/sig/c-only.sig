[[signature]]
keyid = "65f1c1a3ae611ea8732840c66dbb4a968df841c28f677c817d9538840f2b6f53"
algorithm = "ed25519"
value = "1UhGnmDcXO1y/TUL2h/9h9+ml2fIec6E7p1pVOkxF4ydAQLImwBQKgFRWbX1v45QwruagjINHuqTefsXrPFGDw=="
