[[signature]]
keyid = "95c88f7ef058830100a855240f973699fe0c1e797c2d67c2f859057aa39acefe"
algorithm = "ecdsa-p256-sha256"
value = "MEUCIHUnW3dibqoQ5BsvTkW/Ml88Kob4vvZosh3sHMoNecfLAiEAj1/zGhyE2CwY6lQMuJiucFTC4krLi6ubrge1P5edHmk="

[[signature]]
keyid = "4f1477e960c25453044ae21fc50a089fd94c16d0e1360ab0315a2e5c0931f21b"
algorithm = "ecdsa-p256-sha256"
value = "MEQCIE2wpFaDc1zLIfK5joD2soGYluQpNFgnohX1Hcbq+U11AiABetJ/f9WQUs1lqyEK6DwcYH9GWOg8ZTbOwfkl61+PDw=="

[[signature]]
keyid = "65f1c1a3ae611ea8732840c66dbb4a968df841c28f677c817d9538840f2b6f53"
algorithm = "ed25519"
value = "1UhGnmDcXO1y/TUL2h/9h9+ml2fIec6E7p1pVOkxF4ydAQLImwBQKgFRWbX1v45QwruagjINHuqTefsXrPFGDw=="
