"""The one classification toolkit every stage that classifies uses: a linear head on standardised features, the
threshold rule, the metrics function with its one key set, and the labels each of them needs."""
