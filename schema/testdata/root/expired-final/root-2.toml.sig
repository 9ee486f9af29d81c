[[signature]]
keyid = "e62a66ed75775026f25670af71847593a088aa09446d3ac91b3afa0aee5e76db"
algorithm = "ecdsa-p256-sha256"
value = "MEQCIFI2zbfSP37EtqUlIyxi9ceIw6D9dpbjDbUMaYXiJXESAiAL31CsGIorTs3tZ8WCRbGE+DRZfWUabrRvaQeL5e4oOA=="

[[signature]]
keyid = "4f1477e960c25453044ae21fc50a089fd94c16d0e1360ab0315a2e5c0931f21b"
algorithm = "ecdsa-p256-sha256"
value = "MEUCICKezLdv24iQV6PkX5F36oYEk32ok/o6RpyuM+vHYPqSAiEA1gj0Usw7zImcAJsrf8r7/6a1tTptI7HLheth02iaHmk="

[[signature]]
keyid = "65f1c1a3ae611ea8732840c66dbb4a968df841c28f677c817d9538840f2b6f53"
algorithm = "ed25519"
value = "rgB1MPve7KEvMfJQ2QlJT7DF3bnmIATQtvupZE5844MpfOO8Kxs0PHYxhE8oY9y8Bba04b8EoVKH9c1GXpteDA=="

[[signature]]
keyid = "95c88f7ef058830100a855240f973699fe0c1e797c2d67c2f859057aa39acefe"
algorithm = "ecdsa-p256-sha256"
value = "MEUCIDH7Xh9nmr6YtjhxY59Mp/MUG2qtjL1InqtCoMzNEdfWAiEAoPZtaikWx0S/yxqggKIpaqzUe6cu2UzqWjr0h3jlCH8="
