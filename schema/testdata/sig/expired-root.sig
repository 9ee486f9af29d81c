[[signature]]
keyid = "e62a66ed75775026f25670af71847593a088aa09446d3ac91b3afa0aee5e76db"
algorithm = "ecdsa-p256-sha256"
value = "MEUCIBHdN7r1RqOZbZ/VyZfAT04M9QhpTE/CK8cTYg24L21lAiEA4/B8Cz/IgYxTut2VmAi/bw/PeCsJ0W/H0vmtZCpYSDk="

[[signature]]
keyid = "4f1477e960c25453044ae21fc50a089fd94c16d0e1360ab0315a2e5c0931f21b"
algorithm = "ecdsa-p256-sha256"
value = "MEUCIDigZqFzNHR8thOJtBUqEr705IatirtLvfoFLU4YGaK8AiEA487jxRyW87fhkIkeNf9C/0nqeUBAY/bRaapc8Om5qio="
