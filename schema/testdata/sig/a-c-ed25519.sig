[[signature]]
keyid = "e62a66ed75775026f25670af71847593a088aa09446d3ac91b3afa0aee5e76db"
algorithm = "ecdsa-p256-sha256"
value = "MEUCIEQZObn2VOvqMXixyUcVB133eXHSnvccUZSln2VI09oDAiEA2hSctpOHqcIi2JrZ6KpNWwiS/muTMY+kfR3/kW1b7Ow="

[[signature]]
keyid = "65f1c1a3ae611ea8732840c66dbb4a968df841c28f677c817d9538840f2b6f53"
algorithm = "ed25519"
value = "1UhGnmDcXO1y/TUL2h/9h9+ml2fIec6E7p1pVOkxF4ydAQLImwBQKgFRWbX1v45QwruagjINHuqTefsXrPFGDw=="
