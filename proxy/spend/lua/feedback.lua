-- A quality score replaced on a record: add its change to the record's arm rollups.
-- KEYS: hour, day, month arm rollup hash; ARGV: 1 arm field, 2 sums delta, 3 rollup TTL seconds
for i = 1, 3 do add_sums(KEYS[i], ARGV[1], ARGV[2], ARGV[3]) end
return 1
