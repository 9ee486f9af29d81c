[[signature]]
keyid = "e62a66ed75775026f25670af71847593a088aa09446d3ac91b3afa0aee5e76db"
algorithm = "ecdsa-p256-sha256"
value = "MEUCIEMLUCiIizB7pKQSacbgGO8f3dxfgcbbmRCzwWZTF0VBAiEA1TCmgwH/AcIHdjxwdr0PV+lOjCRFYPyarv0HKH9cmBc="

[[signature]]
keyid = "95c88f7ef058830100a855240f973699fe0c1e797c2d67c2f859057aa39acefe"
algorithm = "ecdsa-p256-sha256"
value = "MEUCIQD2YJJyaGGvyFNKIDcaag9NCxXpP4m9yluPs87yymEfzQIgB4Ml1aw8mJStN6bgQg00E4jivFpc/NSN5OWihY6a04k="
