-- Charging events of schema 1.2 name the product of a call (呼叫中心直连, 移动400, 虚拟固话, 一号通,
-- 他网号码, legacy VPMN) and its service number, so billing can total a product's calls
-- (the 400 number's tiers, a call-centre contract) without reading the raw JSON. Older events
-- keep NULL, as they had no product.
ALTER TABLE charging_events ADD COLUMN product TEXT;
ALTER TABLE charging_events ADD COLUMN service_number TEXT;
