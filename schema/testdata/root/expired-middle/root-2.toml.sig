[[signature]]
keyid = "e62a66ed75775026f25670af71847593a088aa09446d3ac91b3afa0aee5e76db"
algorithm = "ecdsa-p256-sha256"
value = "MEUCIQDE+ftkKYnIIeZu98X6+DeOKw8PqSbhYFus1dNx8a1nEwIgX0NpEn42dlVdOgTsPz2vHSgJE/vKLd6GNxV9/GsYUEo="

[[signature]]
keyid = "4f1477e960c25453044ae21fc50a089fd94c16d0e1360ab0315a2e5c0931f21b"
algorithm = "ecdsa-p256-sha256"
value = "MEQCIHfy9k3lX1z+sPmZtFjUqQY+zGUXwMtiE3lkjcgmkdVQAiBAqO6mx53pib2Y5YXPsu3DQVeSanyR+3smYd2MJYwgQA=="

[[signature]]
keyid = "65f1c1a3ae611ea8732840c66dbb4a968df841c28f677c817d9538840f2b6f53"
algorithm = "ed25519"
value = "rgB1MPve7KEvMfJQ2QlJT7DF3bnmIATQtvupZE5844MpfOO8Kxs0PHYxhE8oY9y8Bba04b8EoVKH9c1GXpteDA=="

[[signature]]
keyid = "95c88f7ef058830100a855240f973699fe0c1e797c2d67c2f859057aa39acefe"
algorithm = "ecdsa-p256-sha256"
value = "MEYCIQDI6qZ4T1S+uykei3mY0Cb9269mg5TPirWlnpih4UKM8AIhAOKyNUjh5ChHG875pUAeMfmEXYi1GW08Y/r2+wKx6qOR"
