<?php
// The frontend configuration of a private Zabbix for the tests
// (tests/monitoring/zabbix.py): its API talks to our PostgreSQL and server.
$DB['TYPE']				= 'POSTGRESQL';
$DB['SERVER']			= '127.0.0.1';
$DB['PORT']				= '{{db_port}}';
$DB['DATABASE']			= 'zabbix';
$DB['USER']				= 'zabbix';
$DB['PASSWORD']			= '';
$DB['SCHEMA']			= '';
$DB['ENCRYPTION']		= false;
$DB['KEY_FILE']			= '';
$DB['CERT_FILE']		= '';
$DB['CA_FILE']			= '';
$DB['VERIFY_HOST']		= false;
$DB['CIPHER_LIST']		= '';
$DB['VAULT_URL']		= '';
$DB['VAULT_DB_PATH']	= '';
$DB['VAULT_TOKEN']		= '';
$DB['DOUBLE_IEEE754']	= true;
$ZBX_SERVER				= '127.0.0.1';
$ZBX_SERVER_PORT		= '{{listen_port}}';
$ZBX_SERVER_NAME		= 'check_email_roundtrip tests';
$IMAGE_FORMAT_DEFAULT	= IMAGE_FORMAT_PNG;
