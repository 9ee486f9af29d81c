[[signature]]
keyid = "e62a66ed75775026f25670af71847593a088aa09446d3ac91b3afa0aee5e76db"
algorithm = "ecdsa-p256-sha256"
value = "***"
