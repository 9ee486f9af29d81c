[[signature]]
keyid = "e62a66ed75775026f25670af71847593a088aa09446d3ac91b3afa0aee5e76db"
algorithm = "ecdsa-p256-sha256"
value = "MEQCIHWUfh5Qtsypie4KokUe/+0Ol1ZVXv5pTdjcnMk+0yPJAiAezUkpJS32TnSZySKgn2Hn29IQNvcGyC0Gk7A7tB5yyQ=="

[[signature]]
keyid = "e62a66ed75775026f25670af71847593a088aa09446d3ac91b3afa0aee5e76db"
algorithm = "ecdsa-p256-sha256"
value = "MEUCIQCf3RoWV4gnlus+noWucJtzjzCY0BeSdJ/tyOwvjql8PQIgae1qq4UMistNdlhPsn17yWO8CHJPhKydq4xucwgZgkw="
