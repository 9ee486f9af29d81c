[[signature]]
keyid = "e62a66ed75775026f25670af71847593a088aa09446d3ac91b3afa0aee5e76db"
algorithm = "ecdsa-p256-sha256"
value = "MEUCIQDVCCGAjZJggwfc/eYj8C5W9OQfeHRZjKp4ij5KpJT+aQIgWd0+lcGtNpp7HmDAcB2H3ThMqVCSXukc1ZmPhXN18t4="

[[signature]]
keyid = "4f1477e960c25453044ae21fc50a089fd94c16d0e1360ab0315a2e5c0931f21b"
algorithm = "ecdsa-p256-sha256"
value = "MEUCIDa9Y0sXBpNCjIF5VvgtVQS1qxlI0FunuMHzk6AJ9tvgAiEArhyFTSyUbZAPIXLPifclIe/ru6pxA3I5ksf1f6OCuoQ="

[[signature]]
keyid = "65f1c1a3ae611ea8732840c66dbb4a968df841c28f677c817d9538840f2b6f53"
algorithm = "ed25519"
value = "vDWQZX3WWQgyy8rPTDz8TzCGadBywMxLB4i3VNN+aNOfJm6JotQ+bHtKOw2BC9Ns9yiY6+jsY8OwVNX0FE6sBA=="

[[signature]]
keyid = "95c88f7ef058830100a855240f973699fe0c1e797c2d67c2f859057aa39acefe"
algorithm = "ecdsa-p256-sha256"
value = "MEYCIQDqIaGTlckspNfI4kgQIBzLGsKDi4sTx/7s7olduZMEdAIhAO8eCLFltJDF6tJ3R0p0+jNEOBgSO+R+v8AjZNJOHTPe"
