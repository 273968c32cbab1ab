module github.com/claudepool/claudepool

go 1.24
