[[signature]]
keyid = "e62a66ed75775026f25670af71847593a088aa09446d3ac91b3afa0aee5e76db"
algorithm = "ecdsa-p256-sha256"
value = "MEUCIA6iBorHloDnxZkgaQ3tkMXeR7clK+zXUcAE5yUPzO6RAiEAkf9xM2gctBE5X492mTkEPnj0O1DVcDiNDObCiPth6mU="

[[signature]]
keyid = "4f1477e960c25453044ae21fc50a089fd94c16d0e1360ab0315a2e5c0931f21b"
algorithm = "ecdsa-p256-sha256"
value = "MEUCIAKFJ6o4T2uEqS7ar7Xq/f3B8FgfxG2zWDiFzhMgceMgAiEAwkT9TyHrJf/DgyQDzGvolF+3Te9tEJVVWw9NS1b2vXI="
