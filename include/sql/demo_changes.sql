-- Demo rows for connect_subscription_changes, against the Connect sandbox's demo seed.
-- Portable: the same INSERTs run on SQLite and PostgreSQL (payload is a JSON text literal).
-- What each row should end as after one DAG run (sandbox auto-approve on):
--   approved:  new purchase demo-2001, change of sub-1001, resume of sub-1002, suspend of
--              AS-0000-0000-0005 and cancel of AS-0000-0000-0006 (both named by Connect's id)
--   failed:    purchase fail-2002 (the sandbox's vendor refuses fail-* assets)
--   inquiring: purchase inquire-2003 (the sandbox's vendor asks for more information)
--   rejected:  quantity 0 in a purchase, an unknown asset, an ambiguous external id, a bad e-mail

INSERT INTO connect_subscription_changes (change_type, asset_external_id, asset_external_uid, payload) VALUES
('purchase', 'demo-2001', NULL,
 '{"hub_id": "HB-0000-0001", "marketplace": "MP-00001", "items": [{"item_id": "PRD-276-377-545-0001", "quantity": 5}], "tier1": {"name": "Demo Reseller", "external_id": "reseller-1", "contact_info": {"address_line1": "1 Demo Street", "city": "Springfield", "postal_code": "10001", "country": "US", "contact": {"first_name": "Rita", "last_name": "Reseller", "email": "rita@example.com", "phone_number": "+1 2015550123"}}}, "customer": {"name": "Demo Customer", "external_id": "customer-1", "contact_info": {"address_line1": "2 Client Road", "city": "Springfield", "postal_code": "10002", "country": "US", "contact": {"first_name": "Carl", "last_name": "Customer", "email": "carl@example.com", "phone_number": "+1 2015550124"}}}}'),
('purchase', 'fail-2002', NULL,
 '{"hub_id": "HB-0000-0001", "marketplace": "MP-00001", "item_id": "PRD-276-377-545-0001", "quantity": 1, "tier1": {"name": "Demo Reseller", "external_id": "reseller-1", "contact_info": {"address_line1": "1 Demo Street", "city": "Springfield", "postal_code": "10001", "country": "US", "contact": {"first_name": "Rita", "last_name": "Reseller", "email": "rita@example.com", "phone_number": "+1 2015550123"}}}, "customer": {"name": "Demo Customer", "external_id": "customer-1", "contact_info": {"address_line1": "2 Client Road", "city": "Springfield", "postal_code": "10002", "country": "US", "contact": {"first_name": "Carl", "last_name": "Customer", "email": "carl@example.com", "phone_number": "+1 2015550124"}}}}'),
('purchase', 'inquire-2003', NULL,
 '{"hub_id": "HB-0000-0001", "marketplace": "MP-00001", "item_id": "PRD-276-377-545-0001", "quantity": 2, "tier1": {"name": "Demo Reseller", "external_id": "reseller-1", "contact_info": {"address_line1": "1 Demo Street", "city": "Springfield", "postal_code": "10001", "country": "US", "contact": {"first_name": "Rita", "last_name": "Reseller", "email": "rita@example.com", "phone_number": "+1 2015550123"}}}, "customer": {"name": "Demo Customer", "external_id": "customer-1", "contact_info": {"address_line1": "2 Client Road", "city": "Springfield", "postal_code": "10002", "country": "US", "contact": {"first_name": "Carl", "last_name": "Customer", "email": "carl@example.com", "phone_number": "+1 2015550124"}}}}'),
('change', 'sub-1001', NULL, '{"items": [{"item_id": "SEATS", "quantity": 15}]}'),
('resume', 'sub-1002', NULL, '{}'),
('suspend', NULL, NULL, '{"asset_id": "AS-0000-0000-0005"}'),
('cancel', NULL, NULL, '{"asset_id": "AS-0000-0000-0006"}'),
('purchase', 'demo-2004', NULL,
 '{"hub_id": "HB-0000-0001", "marketplace": "MP-00001", "item_id": "PRD-276-377-545-0001", "quantity": 0, "tier1": {"name": "Demo Reseller", "external_id": "reseller-1", "contact_info": {"address_line1": "1 Demo Street", "city": "Springfield", "postal_code": "10001", "country": "US", "contact": {"first_name": "Rita", "last_name": "Reseller", "email": "rita@example.com", "phone_number": "+1 2015550123"}}}, "customer": {"name": "Demo Customer", "external_id": "customer-1", "contact_info": {"address_line1": "2 Client Road", "city": "Springfield", "postal_code": "10002", "country": "US", "contact": {"first_name": "Carl", "last_name": "Customer", "email": "carl@example.com", "phone_number": "+1 2015550124"}}}}'),
('change', 'sub-9999', NULL, '{"item_id": "SEATS", "quantity": 3}'),
('cancel', 'sub-dup', NULL, '{}'),
('purchase', 'demo-2005', NULL,
 '{"hub_id": "HB-0000-0001", "marketplace": "MP-00001", "item_id": "PRD-276-377-545-0001", "quantity": 1, "tier1": {"name": "Demo Reseller", "external_id": "reseller-1", "contact_info": {"address_line1": "1 Demo Street", "city": "Springfield", "postal_code": "10001", "country": "US", "contact": {"first_name": "Rita", "last_name": "Reseller", "email": "not-an-email", "phone_number": "+1 2015550123"}}}, "customer": {"name": "Demo Customer", "external_id": "customer-1", "contact_info": {"address_line1": "2 Client Road", "city": "Springfield", "postal_code": "10002", "country": "US", "contact": {"first_name": "Carl", "last_name": "Customer", "email": "carl@example.com", "phone_number": "+1 2015550124"}}}}');
